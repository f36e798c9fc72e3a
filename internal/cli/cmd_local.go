package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/supervise"
	"github.com/tailorml/tailor/shard"
)

func init() {
	register("local", "run a whole cluster on this machine: etcd, coordinator, parameter servers, workers", runLocal)
}

func runLocal(ctx context.Context, env *Env) int {
	s := job.DefaultSpec("local", "")
	s.Epochs, s.Out = 10, ""
	var (
		out, shards        string
		workers            int
		standby            bool
		size, trainN, valN int
		testN              int
		keep               bool
		etcdFlag           string
	)
	fs := newFlagSet(env, "local", "", `
Starts a real cluster on this machine and trains on it: an embedded etcd, a
coordinator (and with --standby a second one), --ps parameter servers and
--workers workers, each a separate tailor process on 127.0.0.1. Without --data
it composes the Fashion-outfits set from Debian's dataset-fashion-mnist and
ingests it into OUT/shards first (kept for the next run). --data is a folder
or a store URL (s3://bucket/prefix?endpoint=...); the processes inherit this
one's environment, so AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set here reach
them. The store is checked before anything starts. Every role serves
Prometheus /metrics on a free port; 'tailor status' shows the run. Ctrl-C
stops every process. The model, history and plot end up in OUT/run. With
--etcd the processes use that etcd instead of an embedded one.`)
	fs.StringVar(&out, "out", "out/local", "output folder")
	fs.IntVar(&workers, "workers", 3, "worker processes")
	fs.BoolVar(&standby, "standby", false, "start a standby coordinator too")
	fs.IntVar(&size, "size", 64, "image size of a composed data set")
	fs.IntVar(&trainN, "train", 4000, "training images of a composed data set")
	fs.IntVar(&valN, "val", 1000, "validation images of a composed data set")
	fs.IntVar(&testN, "test", 1000, "test images of a composed data set")
	fs.StringVar(&etcdFlag, "etcd", "", "etcd endpoints, comma-separated, to use instead of an embedded etcd")
	fs.BoolVar(&keep, "resume", false, "resume the run in OUT from its newest checkpoint (keeps OUT's etcd data) instead of starting afresh")
	addSpecFlags(fs, &s)
	if code, done := parse(env, fs); done {
		return code
	}
	if workers < 1 {
		return fail(env, errors.New("--workers: want at least 1"))
	}
	s.Workers = workers // the first step waits for all of them: reproducible sync runs
	if s.Out == "" {
		s.Out = filepath.Join(out, "run")
	}
	shards = s.Data
	if shards == "" {
		shards = filepath.Join(out, "shards")
		if err := ensureFashionShards(ctx, env, out, shards, size, trainN, valN, testN); err != nil {
			return fail(env, err)
		}
	}
	// every process opens the same store: a path must not depend on their
	// working directory; a URL (s3://, file://) is passed on as it is
	s.Data = shards
	var err error
	if !isStoreURL(shards) {
		if s.Data, err = filepath.Abs(shards); err != nil {
			return fail(env, err)
		}
	}
	if s.Out, err = filepath.Abs(s.Out); err != nil {
		return fail(env, err)
	}
	// fail here, before anything starts, if the store cannot be read with
	// the credentials the processes will inherit
	if err := checkStore(ctx, s.Data); err != nil {
		return fail(env, err)
	}

	etcdDir := filepath.Join(out, "etcd")
	if s.Checkpoints == "" {
		// every process is on this machine: checkpoints go next to the run
		if s.Checkpoints, err = filepath.Abs(filepath.Join(out, "checkpoints")); err != nil {
			return fail(env, err)
		}
	}
	if !keep {
		// a new run: the earlier one's coordination state and checkpoints go
		_ = os.RemoveAll(etcdDir)
		if !isStoreURL(s.Checkpoints) && s.Checkpoints == mustAbs(filepath.Join(out, "checkpoints")) {
			_ = os.RemoveAll(s.Checkpoints)
		}
	}
	endpoints := (&clusterFlags{etcd: etcdFlag}).endpoints()
	if len(endpoints) == 0 {
		// etcd logs only what is fatal: at this level its start and stop
		// print harmless "errors" (storage version, closed listeners)
		e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{Dir: etcdDir, FastTicks: true, LogLevel: "fatal"})
		if err != nil {
			return fail(env, err)
		}
		defer e.Close()
		endpoints = e.Endpoints()
		env.Log.Info("etcd", "endpoints", endpoints, "dir", etcdDir)
	} else {
		env.Log.Info("etcd", "endpoints", endpoints)
	}
	cli, err := cluster.NewClient(endpoints)
	if err != nil {
		return fail(env, err)
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = job.Submit(sctx, cli, s)
	cancel()
	if err != nil {
		return fail(env, err)
	}

	self, err := os.Executable()
	if err != nil {
		return fail(env, err)
	}
	// every role serves /metrics on a free port and publishes it in its
	// membership record, where tailor status finds it
	etcdList := strings.Join(endpoints, ",")
	common := []string{"--etcd", etcdList, "--run", s.Run, "--metrics-listen", "127.0.0.1:0"}
	fmt.Fprintf(env.Stdout, "run %s: etcd %s; watch it with: tailor status --etcd %s --run %s --watch 2s\n", s.Run, etcdList, etcdList, s.Run)
	g := supervise.New(env.Stderr, 5*time.Second)
	start := func(name string, args ...string) error {
		return g.Start(supervise.Spec{Name: name, Path: self, Args: args})
	}
	if err := start("coordinator", append([]string{"coordinator", "--id", "coord-a"}, common...)...); err != nil {
		return fail(env, err)
	}
	if standby {
		if err := start("standby", append([]string{"coordinator", "--id", "coord-b"}, common...)...); err != nil {
			g.Stop()
			return fail(env, err)
		}
	}
	for i := 0; i < s.ParamServers; i++ {
		// a parameter server that dies is started again: the coordinator
		// rolls every server back to the last checkpoint once it is back
		err := g.Start(supervise.Spec{Name: fmt.Sprintf("ps%d", i), Path: self, Restart: true,
			Args: append([]string{"paramserver", "--index", strconv.Itoa(i)}, common...)})
		if err != nil {
			g.Stop()
			return fail(env, err)
		}
	}
	for i := 0; i < workers; i++ {
		id := fmt.Sprintf("w%d", i)
		if err := start(id, append([]string{"worker", "--id", id}, common...)...); err != nil {
			g.Stop()
			return fail(env, err)
		}
	}
	// the run is over when a coordinator (the leader) exits cleanly; the
	// other exits cleanly too once it sees the run's status. Workers and the
	// standby may die (the run goes on without them).
	coordinators := map[string]bool{"coordinator": true, "standby": true}
	// with a standby, the first coordinator may die too: the standby takes
	// over from the last checkpoint
	tolerated := map[string]bool{"standby": true, "coordinator": standby}
	for i := 0; i < workers; i++ {
		tolerated[fmt.Sprintf("w%d", i)] = true
	}
	err = g.Wait(ctx, coordinators, tolerated)
	if err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "\nrun %s finished: model %s, history %s\n", s.Run, filepath.Join(s.Out, "model.tailor"), filepath.Join(s.Out, "history.png"))
	if f, err := os.Open(filepath.Join(s.Out, "test_metrics.txt")); err == nil {
		fmt.Fprintln(env.Stdout, "\ntest split:")
		_, _ = io.Copy(env.Stdout, f)
		f.Close()
	}
	return 0
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// isStoreURL reports whether loc is a store URL (scheme://...) rather than
// a path, by shard.OpenStore's rule.
func isStoreURL(loc string) bool {
	scheme, _, ok := strings.Cut(loc, "://")
	return ok && scheme != "" && !strings.ContainsAny(scheme, `/\.`)
}

// checkStore opens the shard store and reads its manifest.
func checkStore(ctx context.Context, loc string) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := shard.OpenStore(cctx, loc)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if _, err := shard.LoadManifest(cctx, st); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	return nil
}

// ensureFashionShards composes and ingests the Fashion-outfits set unless
// the shards exist.
func ensureFashionShards(ctx context.Context, env *Env, out, shards string, size, train, val, test int) error {
	if _, err := os.Stat(filepath.Join(shards, shard.ManifestName)); err == nil {
		env.Log.Info("using existing shards", "dir", shards)
		return nil
	}
	fc := fashion.DefaultConfig()
	fc.Out, fc.Size, fc.Train, fc.Val, fc.Test, fc.Overwrite = filepath.Join(out, "images"), size, train, val, test, true
	if _, err := fashion.Generate(ctx, fc, env.Log); err != nil {
		return err
	}
	st, err := shard.NewLocalStore(shards)
	if err != nil {
		return err
	}
	bc := shard.DefaultBuildConfig()
	bc.Size, bc.Overwrite = size, true
	_, err = shard.Build(ctx, bc, fc.Out, st, env.Stderr, env.Log)
	return err
}
