package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/identity"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/progress"
	"github.com/tailorml/tailor/localcluster/supervise"
	"github.com/tailorml/tailor/store"
	"github.com/tailorml/tailor/store/s3local"
)

// Result is where a finished run left its work.
type Result struct {
	Run string
	// Out is the run's output folder (the spec's Out, absolute); Model,
	// History and TestMetrics are its model, its history plot and the
	// test split's scores (a file that exists if the data set has a test
	// split).
	Out, Model, History, TestMetrics string
}

// Run runs the cluster of cfg until the leader records the run done (nil),
// a process that the run needs fails past its restart limit (an error
// naming it), or ctx ends (its error); every process is stopped before it
// returns, and the embedded S3 server and etcd after them. The store is
// checked before anything starts. It makes the paths of cfg absolute:
// the processes must open the same files whatever their working
// directory, and the embedded S3 server makes its root this process's
// working directory while it runs.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	cfg = cfg.absolute()
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	wd, err := os.Getwd()
	if err != nil {
		return Result{}, err
	}
	self := cfg.Executable
	if self == "" {
		if self, err = os.Executable(); err != nil {
			return Result{}, err
		}
	}
	s := cfg.Spec
	s.Workers = cfg.Workers // the first step waits for all of them: reproducible sync runs

	// the shards and checkpoints: in the embedded S3 server, or in files;
	// a store URL is passed on as it is
	st, err := openStores(ctx, cfg, &s)
	if st.s3 != nil {
		// it stops after every process has (deferred first, it runs last)
		defer func() {
			if err := st.s3.Stop(); err != nil {
				cfg.Log.Warn("embedded s3", "err", err)
			}
		}()
	}
	if err != nil {
		return Result{}, err
	}
	// fail here, before anything starts, if the store cannot be read with
	// the credentials the processes will have
	if err := checkStore(ctx, s.Data, st.open); err != nil {
		return Result{}, err
	}
	etcdDir := filepath.Join(cfg.Out, "etcd")
	if !cfg.Resume {
		// a new run: the earlier one's coordination state and checkpoints go
		_ = os.RemoveAll(etcdDir)
		switch {
		case st.checkpoints != nil:
			if err := emptyStore(ctx, st.checkpoints); err != nil {
				return Result{}, fmt.Errorf("remove the checkpoints of the run before: %w", err)
			}
		case st.ownCheckpoints:
			_ = os.RemoveAll(s.Checkpoints)
		}
	}

	// child is what the processes get: the given settings, or with Secure
	// the generated ones where none were given
	child, gossipKey := cfg.Security, cfg.GossipKeyFile
	var dev certs.Files // with Secure: Out/certs's CA and node pair
	// with Secure and no --tls-* given: each role's certificate, which
	// its processes present instead of child.TLS's
	var roles map[identity.Role]certs.Files
	certDir := filepath.Join(cfg.Out, certsDir)
	if cfg.Secure {
		var devRoles map[identity.Role]certs.Files
		if dev, devRoles, err = ensureDevCerts(cfg.Log, certDir); err != nil {
			return Result{}, err
		}
		if !child.TLS.Enabled() {
			child.TLS, roles = dev, devRoles
		}
		if gossipKey == "" {
			if gossipKey, err = ensureGossipKey(certDir); err != nil {
				return Result{}, err
			}
		}
	}
	if gossipKey != "" {
		if err := readGossipKey(gossipKey); err != nil {
			return Result{}, err
		}
	}
	if _, err := child.TLS.Load(); err != nil {
		return Result{}, fmt.Errorf("--tls-ca/--tls-cert/--tls-key: %w", err)
	}

	endpoints, embedded := cfg.Etcd, len(cfg.Etcd) == 0
	var cli *clientv3.Client
	if embedded {
		// etcd logs only what is fatal: at this level its start and stop
		// print harmless "errors" (storage version, closed listeners)
		ec := cluster.EtcdConfig{Dir: etcdDir, FastTicks: true, LogLevel: "fatal"}
		if cfg.Secure {
			ec.ClientTLS, ec.ClientCertAuth = cluster.TLSFiles{CA: dev.CA, Cert: dev.Cert, Key: dev.Key}, true
		}
		e, err := cluster.StartEtcd(ctx, ec)
		if err != nil {
			return Result{}, err
		}
		defer e.Close()
		endpoints = e.Endpoints()
		cfg.Log.Info("etcd", "endpoints", endpoints, "dir", etcdDir, "tls", cfg.Secure)
		// the embedded etcd is this run's: its TLS and user are ours, not
		// the ones given for another etcd
		child.EtcdTLS, child.EtcdUser, child.EtcdPasswordFile = certs.Files{}, "", ""
		if cfg.Secure {
			var user, pwFile string
			if user, pwFile, err = ensureEtcdAuth(ctx, endpoints, dev, certDir); err != nil {
				return Result{}, err
			}
			child.EtcdTLS, child.EtcdUser, child.EtcdPasswordFile = dev, user, pwFile
			cli, err = child.etcdClient(endpoints)
		} else {
			cli, err = cluster.NewClient(endpoints)
		}
		if err != nil {
			return Result{}, err
		}
	} else {
		cfg.Log.Info("etcd", "endpoints", endpoints)
		if cfg.Secure && !child.etcdFiles(endpoints).Enabled() {
			cfg.Log.Warn("--secure with a plaintext etcd: give https:// endpoints and --etcd-ca (or --tls-ca)")
		}
		if cli, err = child.etcdClient(endpoints); err != nil {
			return Result{}, err
		}
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = job.Submit(sctx, cli, s)
	cancel()
	if errors.Is(err, job.ErrExists) && cfg.Resume {
		err = fmt.Errorf("%w (--resume goes on with the run's spec: give it the flags of the run it resumes, --store and --data too)", err)
	}
	if err != nil {
		return Result{}, err
	}

	etcdList := strings.Join(endpoints, ",")
	// tailor status with the operator's certificate, when there are roles
	operator := child
	if a, ok := roles[identity.Admin]; ok {
		operator.TLS = a
	}
	fmt.Fprintf(cfg.Stdout, "run %s: etcd %s; watch it with: %s\n", s.Run, etcdList,
		strings.Join(append(append([]string{"tailor", "status", "--etcd", etcdList, "--run", s.Run}, operator.Args()...), "--watch", "2s"), " "))
	fmt.Fprintf(cfg.Stdout, "run %s: %s\n", s.Run, s.LRSummary())
	if cfg.Dashboard != "" {
		stopDash, err := startDashboard(ctx, cfg, cli, s.Run, operator, certDir)
		if err != nil {
			return Result{}, err
		}
		defer stopDash()
	}
	procs := processes(s, cfg.Workers, cfg.Standby, commonArgs(s.Run, endpoints, child, gossipKey), roleArgs(roles))
	logDir := filepath.Join(cfg.Out, LogsDir)
	logs, err := openLogs(logDir, procs, cfg.Resume)
	if err != nil {
		return Result{}, err
	}
	defer logs.close()
	// on Ctrl-C every role gets SIGTERM: workers finish their step, the
	// leader checkpoints (the servers wait for it), then all leave; those
	// still running when the grace is over are killed
	stopGrace := job.DefaultPreemptGrace + 5*time.Second
	// with Verbose the processes' lines stream to Stderr, each prefixed
	// with its name; otherwise only their log files get them, and Stdout
	// gets the run's status and the supervisor's lines (exits, restarts)
	var g *supervise.Group
	if cfg.Verbose {
		g = supervise.New(cfg.Stderr, stopGrace)
	} else {
		g = supervise.New(nil, stopGrace)
		rep := newReporter(cfg.Stdout, progress.IsTerminal(cfg.Stdout), cli, s.Run, logDir)
		g.SetNotices(rep)
		defer rep.start(ctx)()
	}
	// every role is started again when it fails; an optional one may stay
	// down past its limit, the run goes on without it
	policy := supervise.DefaultRestartPolicy()
	policy.Limit, policy.Window = cfg.RestartLimit, cfg.RestartWindow
	env := append(childEnv(embedded, child), st.env...)
	for _, p := range procs {
		err := g.Start(supervise.Spec{Name: p.name, Path: self, Args: p.args, Env: env, Dir: wd,
			Optional: p.optional, Restart: cfg.RestartLimit > 0, Policy: policy, Log: logs.files[p.name]})
		if err != nil {
			g.Stop()
			return Result{}, err
		}
	}
	if err := g.Wait(ctx, untilDone(cfg.Standby), nil); err != nil {
		return Result{}, err
	}
	return Result{Run: s.Run, Out: s.Out, Model: filepath.Join(s.Out, "model.tailor"), History: filepath.Join(s.Out, "history.png"),
		TestMetrics: filepath.Join(s.Out, "test_metrics.txt")}, nil
}

// absolute is c with every path absolute; the spec's Out is Out/run if
// empty.
func (c Config) absolute() Config {
	c.Out = abs(c.Out)
	if c.Spec.Out == "" {
		c.Spec.Out = filepath.Join(c.Out, "run")
	}
	c.Spec.Out = abs(c.Spec.Out)
	c.Security = c.Security.absolute()
	c.GossipKeyFile = abs(c.GossipKeyFile)
	if c.Spec.Data != "" && !store.IsURL(c.Spec.Data) {
		c.Spec.Data = abs(c.Spec.Data)
	}
	return c
}

// stores are the run's stores as Run sets them up.
type stores struct {
	s3             *s3local.Server   // the embedded S3 server, or nil
	open           store.OpenOptions // how this process opens the run's stores
	env            []string          // the processes' credentials for them
	ownCheckpoints bool              // checkpoints in Out's store, emptied by a new run
	checkpoints    store.Store       // that store in the embedded server
}

// openStores sets up the shards and checkpoints of the run (see
// Config.Spec and Config.Store) and points s's Data and Checkpoints at
// them. The S3 server it returns, if any, is running even when the error
// is not nil.
func openStores(ctx context.Context, cfg Config, s *job.Spec) (stores, error) {
	st := stores{ownCheckpoints: s.Checkpoints == ""}
	if cfg.Store == StoreFile || store.IsURL(s.Data) {
		if s.Data == "" {
			dir := filepath.Join(cfg.Out, "shards")
			local, err := store.NewLocal(dir)
			if err == nil {
				err = ensureFashionShards(ctx, cfg, local)
			}
			if err != nil {
				return st, err
			}
			s.Data = dir
		}
		if st.ownCheckpoints {
			// every process is on this machine: checkpoints go next to the run
			s.Checkpoints = filepath.Join(cfg.Out, "checkpoints")
		}
		return st, nil
	}
	dir := filepath.Join(cfg.Out, s3Dir)
	srv, err := startS3(ctx, dir, cfg.Resume)
	if err != nil {
		return st, err
	}
	st.s3, st.open, st.env = srv, store.OpenOptions{Getenv: srv.Getenv}, srv.Env()
	cfg.Log.Info("embedded s3", "endpoint", "http://"+srv.Endpoint(), "dir", dir, "metadata", srv.MetaMode())
	prefix := fashionPrefix
	if s.Data != "" {
		prefix = dataPrefix
	}
	dst, err := srv.Open(ctx, bucket, prefix)
	if err != nil {
		return st, err
	}
	if s.Data == "" {
		err = ensureFashionShards(ctx, cfg, dst)
	} else {
		var src store.Store
		if src, err = store.NewLocal(s.Data); err == nil {
			err = copyDataSet(ctx, cfg.Log, src, dst)
		}
	}
	if err != nil {
		return st, err
	}
	s.Data = srv.URL(bucket, prefix)
	if st.ownCheckpoints {
		s.Checkpoints = srv.URL(bucket, checkpointPrefix)
		if st.checkpoints, err = srv.Open(ctx, bucket, checkpointPrefix); err != nil {
			return st, err
		}
	}
	return st, nil
}

// process is one process of the cluster: its name (the prefix of its
// output lines), its log file's name in Out/logs (role-id.log), its
// command line after the binary, and whether the run may go on without it.
type process struct {
	name     string
	log      string
	args     []string
	optional bool
}

// LogsDir is the folder under Config.Out of the processes' logs, one file
// per process: coordinator-coord-a.log, paramserver-ps0.log,
// worker-w0.log, ...
const LogsDir = "logs"

// logFiles are the processes' log files, by process name.
type logFiles struct{ files map[string]*os.File }

// openLogs opens dir/<p.log> for each process: emptied for a new run,
// appended to when it resumes (a restarted process appends in any case).
func openLogs(dir string, procs []process, resume bool) (*logFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("logs folder: %w", err)
	}
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if !resume {
		flags |= os.O_TRUNC
	}
	l := &logFiles{files: map[string]*os.File{}}
	for _, p := range procs {
		f, err := os.OpenFile(filepath.Join(dir, p.log), flags, 0o644)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("log of %s: %w", p.name, err)
		}
		l.files[p.name] = f
	}
	return l, nil
}

// close closes the files; the group writing them has stopped.
func (l *logFiles) close() {
	for _, f := range l.files {
		f.Close()
	}
}

// commonArgs are the flags of every process: the run's etcd and id, a
// /metrics and a gossip listener on free ports (every role publishes its
// /metrics address in its membership record, where tailor status finds
// it), the TLS and etcd settings, and the gossip key file.
func commonArgs(run string, endpoints []string, sec Security, gossipKeyFile string) []string {
	a := append([]string{"--etcd", strings.Join(endpoints, ","), "--run", run, "--metrics-listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0"}, sec.Args()...)
	if gossipKeyFile != "" {
		a = append(a, "--gossip-key-file", gossipKeyFile)
	}
	return a
}

// roleArgs are, per role, the flags of its certificate, which come after
// the common ones and so win over their --tls-cert and --tls-key (nil
// without role certificates).
func roleArgs(roles map[identity.Role]certs.Files) map[string][]string {
	if len(roles) == 0 {
		return nil
	}
	out := map[string][]string{}
	for r, f := range roles {
		out[string(r)] = []string{"--tls-cert", f.Cert, "--tls-key", f.Key}
	}
	return out
}

// processes are the cluster's processes, in the order they start: the
// coordinator (and the standby), the parameter servers, the workers. Each
// gets the common flags, then its role's in byRole.
func processes(s job.Spec, workers int, standby bool, common []string, byRole map[string][]string) []process {
	listen := []string{"--listen", "127.0.0.1:0"}
	role := func(args ...string) []string {
		return append(append(append(args, common...), byRole[args[0]]...), listen...)
	}
	// with a standby, either coordinator may fail for good: the other
	// takes over from the last checkpoint
	ps := []process{{name: "coordinator", log: "coordinator-coord-a.log", args: role("coordinator", "--id", "coord-a"), optional: standby}}
	if standby {
		ps = append(ps, process{name: "standby", log: "coordinator-coord-b.log", args: role("coordinator", "--id", "coord-b"), optional: true})
	}
	for i := 0; i < s.ParamServers; i++ {
		// a parameter server that comes back is rolled back, with the
		// others, to the last checkpoint by the leader; the run needs
		// every one of them
		ps = append(ps, process{name: fmt.Sprintf("ps%d", i), log: fmt.Sprintf("paramserver-ps%d.log", i), args: role("paramserver", "--index", strconv.Itoa(i))})
	}
	for i := 0; i < workers; i++ {
		// a worker that comes back asks for work again; one left down
		// leaves its units to the others
		id := fmt.Sprintf("w%d", i)
		ps = append(ps, process{name: id, log: "worker-" + id + ".log", args: append(append([]string{"worker", "--id", id}, common...), byRole["worker"]...), optional: true})
	}
	return ps
}

// untilDone are the processes whose clean exit ends the run: a
// coordinator (the leader) exits cleanly after recording the run's status;
// the other exits cleanly too once it sees it.
func untilDone(standby bool) map[string]bool {
	until := map[string]bool{"coordinator": true}
	if standby {
		until["standby"] = true
	}
	return until
}

// childEnv unsets, for the processes, the variables whose settings they
// get as flags or must not get: a config file and the addresses (fixed
// ports would collide on one machine), and the TLS and etcd settings Run
// resolved. The etcd password stays when it comes from the environment
// for an external etcd (it is never a flag).
func childEnv(embedded bool, child Security) []string {
	env := []string{"TAILOR_CONFIG=", "TAILOR_GOSSIP=", "TAILOR_LISTEN=", "TAILOR_ADVERTISE=", "TAILOR_METRICS_LISTEN=",
		"TAILOR_GOSSIP_KEY_FILE=", "TAILOR_TLS_CA=", "TAILOR_TLS_CERT=", "TAILOR_TLS_KEY=",
		"TAILOR_ETCD_CA=", "TAILOR_ETCD_CERT=", "TAILOR_ETCD_KEY=", "TAILOR_ETCD_USER=", "TAILOR_ETCD_PASSWORD_FILE="}
	if embedded || child.EtcdUser == "" || child.EtcdPasswordFile != "" {
		env = append(env, "TAILOR_ETCD_PASSWORD=")
	}
	return env
}
