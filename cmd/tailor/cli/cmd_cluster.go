package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/paramserver"
	"github.com/tailorml/tailor/worker"
)

func init() {
	registerDraining("coordinator", "lead a cluster run (or stand by for the leader)", runCoordinator)
	registerDraining("worker", "train in a cluster run", runWorker)
	register("submit", "submit a cluster run (its spec goes to etcd)", runSubmit)
}

// clusterFlags are the flags every cluster role has.
type clusterFlags struct {
	etcd, run, gossip, metrics, secret, advertise string
	grace                                         time.Duration
	sec                                           securityFlags
}

func (c *clusterFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&c.etcd, "etcd", os.Getenv("TAILOR_ETCD"), "etcd endpoints, comma-separated (env TAILOR_ETCD)")
	fs.StringVar(&c.run, "run", os.Getenv("TAILOR_RUN"), "run id (env TAILOR_RUN)")
	fs.StringVar(&c.gossip, "gossip", "127.0.0.1:0", "memberlist bind address host:port")
	fs.StringVar(&c.metrics, "metrics-listen", "", "Prometheus /metrics listen address (empty: none)")
	fs.StringVar(&c.secret, "gossip-key-file", "", "file holding the hex gossip encryption key (16, 24 or 32 bytes); one key a line, the first sent with, every one accepted; read again while running (rotation)")
	fs.StringVar(&c.advertise, "advertise", os.Getenv("TAILOR_ADVERTISE"), "host name or address peers dial this process at, with each listener's port (for listeners on 0.0.0.0; needs a fixed --gossip port; env TAILOR_ADVERTISE)")
	fs.DurationVar(&c.grace, "preempt-grace", job.DefaultPreemptGrace, "on SIGTERM or Ctrl-C (a preemption notice), the longest this process takes to leave the run cleanly: a worker finishes its step, the leader and the parameter servers checkpoint first; a second signal stops at once")
	c.sec.add(fs)
}

// node is how a role's process reaches the run: the flags every role
// shares, with the gossip key, the roles' mutual TLS and the etcd client's
// TLS and credentials loaded, and the preemption notice. listen is the
// role's gRPC address ("" for a worker, which serves none).
func (c *clusterFlags) node(env *Env, listen string, log *slog.Logger) (job.Node, error) {
	key, err := c.key()
	if err != nil {
		return job.Node{}, err
	}
	wt, err := c.sec.wireTLS(log)
	if err != nil {
		return job.Node{}, err
	}
	auth, err := c.sec.etcdAuth(c.endpoints())
	if err != nil {
		return job.Node{}, err
	}
	return job.Node{Run: c.run, Etcd: c.endpoints(), EtcdAuth: auth, Listen: listen, MetricsAddr: c.metrics, GossipBind: c.gossip,
		Advertise: c.advertise, SecretKey: key, GossipKeyFile: c.secret, TLS: wt, Log: log, Drain: env.Drain(), PreemptGrace: c.grace}, nil
}

// ExitPreempted is a role's exit code after it left the run on a
// preemption notice: 128 + SIGTERM, as a process the signal ended, so
// that a supervisor (tailor local, systemd's Restart=on-failure) starts
// it again where the machine itself is not going away.
const ExitPreempted = 143

// roleExit is a role's exit code for the error it ended with.
func roleExit(env *Env, err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, job.ErrPreempted):
		env.Log.Info("exiting", "why", err.Error())
		return ExitPreempted
	}
	return fail(env, err)
}

func (c *clusterFlags) endpoints() []string {
	var out []string
	for _, e := range strings.Split(c.etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func (c *clusterFlags) key() ([]byte, error) {
	if c.secret == "" {
		return nil, nil
	}
	keys, err := cluster.ReadKeyFile(c.secret)
	if err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	return keys[0], nil
}

func (c *clusterFlags) check(env *Env, cmd string) bool {
	if len(c.endpoints()) == 0 || c.run == "" {
		fmt.Fprintf(env.Stderr, "tailor %s: --etcd and --run are required\n", cmd)
		return false
	}
	return true
}

func runCoordinator(ctx context.Context, env *Env) int {
	var cf clusterFlags
	var id, listen string
	fs := newFlagSet(env, "coordinator", "--etcd E --run R --id ID", `
Joins run R and stands for election; the leader initialises the parameter
servers, hands out batches, decides sync steps, validates after every epoch
and keeps the best model in the run's output folder. Start two for a standby.`)
	cf.add(fs)
	fs.StringVar(&id, "id", "", "this coordinator's id (default: host name and pid)")
	fs.StringVar(&listen, "listen", "127.0.0.1:0", "gRPC listen address")
	if code, done := parse(env, fs); done {
		return code
	}
	if !cf.check(env, "coordinator") {
		return 2
	}
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	node, err := cf.node(env, listen, env.Log.With("role", "coordinator", "id", id))
	if err != nil {
		return fail(env, err)
	}
	// TAILOR_PROGRESS_INTERVAL (a duration) tunes how often tailor status's
	// numbers refresh; tests shorten it
	every, _ := time.ParseDuration(os.Getenv("TAILOR_PROGRESS_INTERVAL"))
	return roleExit(env, coordinator.Run(ctx, coordinator.Config{Node: node, ID: id, ProgressInterval: every}))
}

func runWorker(ctx context.Context, env *Env) int {
	var cf clusterFlags
	var id string
	var synthetic time.Duration
	fs := newFlagSet(env, "worker", "--etcd E --run R --id ID", `
Joins run R as a worker: streams its batches' shards from the object store,
computes gradients, pushes them to the parameter servers and pulls the new
weights, until the coordinator says the run is done.`)
	cf.add(fs)
	host, _ := os.Hostname()
	fs.StringVar(&id, "id", host, "this worker's id, unique in the run (default: the host name, e.g. a container's)")
	fs.DurationVar(&synthetic, "synthetic-compute", 0, "replace every step's forward and backward pass by a sleep of this long (a measured step time) and push gradients of the real shapes with deterministic values: many workers on few cores for network and scaling experiments; the model learns nothing (0: compute)")
	if code, done := parse(env, fs); done {
		return code
	}
	if !cf.check(env, "worker") {
		return 2
	}
	if id == "" {
		fmt.Fprintln(env.Stderr, "tailor worker: --id is required (the host name is unknown)")
		return 2
	}
	node, err := cf.node(env, "", env.Log.With("role", "worker", "id", id))
	if err != nil {
		return fail(env, err)
	}
	return roleExit(env, worker.Run(ctx, worker.Config{Node: node, ID: id, SyntheticCompute: synthetic}))
}

// runParamServerNode is `tailor paramserver --etcd ...`: a server of a
// cluster run.
func runParamServerNode(ctx context.Context, env *Env, cf clusterFlags, index int, listen string) int {
	node, err := cf.node(env, listen, env.Log.With("role", "paramserver", "index", index))
	if err != nil {
		return fail(env, err)
	}
	return roleExit(env, paramserver.RunNode(ctx, paramserver.NodeConfig{Node: node, Index: index}))
}

// posWeightHelp is --pos-weight's help, in tailor train and a cluster run.
const posWeightHelp = "weigh each label's positive targets in the loss (PyTorch's BCEWithLogitsLoss pos_weight): none, auto (neg/pos of the training split's counts, for rare labels) or a CSV `file` of label,weight lines"

// addSpecFlags binds the job spec's settings to flags.
func addSpecFlags(fs *flag.FlagSet, s *job.Spec) {
	fs.StringVar(&s.Data, "data", s.Data, "shard set (path or store URL as every process sees it)")
	fs.IntVar(&s.Epochs, "epochs", s.Epochs, "epochs")
	fs.IntVar(&s.Batch, "batch", s.Batch, "batch size per worker (global batch = batch × workers)")
	fs.Uint64Var(&s.Seed, "seed", s.Seed, "run seed")
	fs.Var(&s.Mode, "mode", "update rule: sync, async or ssp")
	fs.IntVar(&s.Staleness, "staleness", s.Staleness, "ssp: steps a worker may run ahead of the slowest")
	fs.IntVar(&s.Quorum, "quorum", s.Quorum, "sync: apply a step after the first N gradients (backup workers; 0: all)")
	fs.DurationVar(&s.StepDeadline, "step-deadline", s.StepDeadline, "sync: longest wait for a step's gradients")
	fs.DurationVar(&s.StallTimeout, "stall-timeout", s.StallTimeout, "the leader reports a stall after this long without progress, then re-dispatches and rolls back (0: 1m; negative: off)")
	fs.IntVar(&s.ParamServers, "ps", s.ParamServers, "parameter servers")
	fs.StringVar(&s.Shuffle, "shuffle", s.Shuffle, "how records are dealt: global (one permutation of the split, as one process; workers cache the split) or units (shard ranges of --unit-size records)")
	fs.IntVar(&s.UnitSize, "unit-size", s.UnitSize, "records per work unit (--shuffle units)")
	s.Settings.AddFlags(fs)
	fs.StringVar(&s.LRScale, "lr-scale", s.LRScale, "sync, a fixed worker set: multiply --lr by √workers (sqrt), by workers (linear) or not (none), for the global batch of batch × workers")
	fs.IntVar(&s.WarmupSteps, "warmup-steps", s.WarmupSteps, "sync steps over which a scaled learning rate ramps up from --lr (0: none)")
	fs.StringVar(&s.Compression, "compression", s.Compression, "how workers encode pushed gradients: none, fp16, or topk (the largest --topk of every chunk; the rest carried into the next step)")
	fs.BoolVar(&s.Overlap, "overlap", s.Overlap, "workers push each gradient tensor as soon as backprop has it, overlapping communication with compute")
	fs.Float64Var(&s.TopK, "topk", s.TopK, "--compression topk: fraction of the gradient's floats sent per step (0: 0.2)")
	fs.BoolVar(&s.Augment.Enabled, "augment", s.Augment.Enabled, "augment training images")
	fs.Var(&s.PosWeight, "pos-weight", posWeightHelp)
	fs.BoolVar(&s.BNEstimate, "bn-estimate", s.BNEstimate, "re-estimate BatchNorm statistics before validating and saving")
	fs.BoolVar(&s.SyncBN, "sync-bn", s.SyncBN, "sync: synchronise BatchNorm statistics across the workers of a step (global-batch statistics, as one process; off with --quorum)")
	fs.BoolVar(&s.EvalRunning, "eval-running-bn", s.EvalRunning, "also validate with the running BatchNorm statistics")
	fs.IntVar(&s.CheckpointEvery, "checkpoint-every", s.CheckpointEvery, "steps (async, ssp: batches) between checkpoints (0: epoch ends only; every epoch's end checkpoints)")
	fs.IntVar(&s.KeepCheckpoints, "keep-checkpoints", s.KeepCheckpoints, "newest checkpoints kept (and the best one)")
	fs.BoolVar(&s.Audit, "audit", s.Audit, "log every consumed batch's record IDs to OUT/audit.log (exactly-once checks)")
	fs.StringVar(&s.Checkpoints, "checkpoints", s.Checkpoints, "checkpoint store, path or URL (default: the data store, under checkpoints/)")
	fs.DurationVar(&s.StoreRetry, "store-retry", s.StoreRetry, "how long every role retries an object store that is out of reach, then gives up (0: 90s; negative: no retries)")
}

func runSubmit(ctx context.Context, env *Env) int {
	var cf clusterFlags
	s := job.DefaultSpec("", "")
	fs := newFlagSet(env, "submit", "--etcd E --run R --data SHARDS", `
Writes the spec of run R to etcd. Coordinators, parameter servers and workers
started with --run R read it. Submitting the same spec again is a no-op; a
different spec for an existing run is an error.`)
	cf.add(fs)
	addSpecFlags(fs, &s)
	fs.StringVar(&s.Out, "out", "", "the coordinator's output folder: model, history (default out/RUN)")
	fs.IntVar(&s.Workers, "wait-workers", 0, "workers the coordinator waits for before the first step and after a resume")
	if code, done := parse(env, fs); done {
		return code
	}
	if !cf.check(env, "submit") {
		return 2
	}
	s.Run = cf.run
	if s.Out == "" {
		s.Out = "out/" + s.Run
	}
	cli, err := cf.sec.etcdClient(cf.endpoints())
	if err != nil {
		return fail(env, err)
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := job.Submit(sctx, cli, s); err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "submitted run %s: %s\n", s.Run, s.LRSummary())
	return 0
}
