package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/fault"
	"github.com/tailorml/tailor/internal/identity"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/internal/retry"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/shard"
)

// Addrs keys a worker publishes in its membership record.
const (
	AddrGRPC = "grpc"
)

// Config is one worker process.
type Config struct {
	// Node is how the process reaches the run; its TLS, if set, is mutual
	// TLS to the parameter servers and the coordinator. A worker serves no
	// gRPC: Listen is unused.
	job.Node
	ID         string
	ShardCache int // shards kept in memory
	// SyntheticCompute, if positive, replaces every step's forward and
	// backward pass by a sleep of this long and pushes a gradient of the
	// net's real shapes with deterministic values (ComputeConfig.Synthetic):
	// many workers on few cores, with the real protocol, servers and
	// coordinator. The worker still reads its batches' records.
	SyntheticCompute time.Duration
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.ID == "" {
		return errors.New("worker needs a worker id")
	}
	if err := c.Node.Validate(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if c.SyntheticCompute < 0 {
		return fmt.Errorf("worker: negative synthetic compute time %v", c.SyntheticCompute)
	}
	return nil
}

// Rank is a worker's dropout rank: a stable function of its id.
func Rank(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64() | 1
}

// Run is a worker's life: join the run, then train on the batches the
// coordinator hands out until it says the run is done or ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger()
	// after a preemption notice, the worker has the grace to finish its
	// step and report it
	ctx, cancel := cfg.GraceContext(ctx)
	defer cancel()
	sess, err := job.Join(ctx, cfg.Node, cluster.Member{ID: cfg.ID, Role: cluster.RoleWorker})
	if err != nil {
		return err
	}
	defer sess.Close(ctx)
	m := newMetrics()
	sess.ServeMetrics(m.handler())
	spec, mem, cli, keys := sess.Spec, sess.Members, sess.Client, sess.Keys

	// shard reads retry a store out of reach for spec.StoreRetry; then the
	// worker exits with the error and its units go back to the pool
	st, man, net, err := netspec.Open(ctx, spec.Data, spec.Seed, spec.StorePolicy(log))
	if err != nil {
		return err
	}
	wspec, _ := netspec.Tensors(net)
	psAddrs, err := cluster.WaitRanks(ctx, mem, cluster.RoleParamServer, spec.ParamServers, AddrGRPC)
	if err != nil {
		return err
	}
	client, err := wire.NewClient(wire.ClientConfig{RunID: cfg.Run, WorkerID: cfg.ID, Addrs: psAddrs, Spec: wspec, TLS: cfg.TLS,
		Compression: spec.WireCompression()})
	if err != nil {
		return err
	}
	defer client.Close()
	// the client is the one owner of the servers' addresses: membership
	// (etcd's watch and gossip) moves a server that comes back elsewhere,
	// so no pull, push or retry can keep dialling an address it replaced
	fctx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		cluster.FollowRanks(fctx, mem, cluster.RoleParamServer, spec.ParamServers, AddrGRPC, psAddrs, func(addrs []string) {
			moved, err := client.SetAddrs(addrs)
			if err != nil {
				log.Error("following the parameter servers", "err", err)
				return
			}
			log.Info("parameter servers moved; following", "servers", moved, "addrs", addrs)
		}, 0)
	}()
	defer func() { stopFollow(); <-followed }()
	mean, std := man.Normalization()
	// sync workers draw the dropout masks of one process's global batch,
	// each its slice (rank 0, and the batch's offset in the step); async
	// ones draw their own
	rank := Rank(cfg.ID)
	if spec.Mode == job.ModeSync {
		rank = 0
	}
	// the loss's positive weights, from the training split's counts as
	// one process computes them
	var posW []float32
	if spec.PosWeight.Mode != "" && spec.PosWeight.Mode != input.PosWeightNone {
		sp, err := man.Split(shard.SplitTrain)
		if err != nil {
			return err
		}
		if posW, err = spec.PosWeight.For(man.Labels, sp.LabelCounts, sp.Records); err != nil {
			return err
		}
	}
	comp := NewCompute(ComputeConfig{Rank: rank, Seed: spec.Seed, Augment: spec.Augment, Mean: mean, Std: std, Overlap: spec.Overlap,
		Sync: spec.Mode == job.ModeSync, Delay: fault.Duration("worker." + cfg.ID + ".delay"), PosWeight: posW,
		Synthetic: cfg.SyntheticCompute, Worker: Rank(cfg.ID)}, net, client)
	if cfg.SyntheticCompute > 0 {
		log.Info("synthetic compute: every step sleeps instead of computing", "step", cfg.SyntheticCompute)
	}
	csize := max(cfg.ShardCache, 2)
	if spec.GlobalShuffle() {
		// every batch draws from the whole training split
		sp, err := man.Split(shard.SplitTrain)
		if err != nil {
			return err
		}
		csize = max(csize, len(sp.Shards))
		log.Info("global shuffle: caching the training split", "shards", len(sp.Shards), "bytes", sp.Bytes)
	}
	cache := NewShardCache(st, man, csize)
	if spec.GlobalShuffle() {
		if err := cache.PrefetchSplit(ctx, shard.SplitTrain); err != nil {
			return err
		}
	}
	elect, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys, Self: mem.Self()})
	if err != nil {
		return err
	}
	w := &runner{cfg: cfg, spec: spec, log: log, cli: cli, elect: elect, comp: comp, ps: client, cache: cache, man: man, m: m,
		hold: fault.String("worker." + cfg.ID + ".hold")}
	if spec.SyncBatchNorm() {
		stall := fault.Duration("worker." + cfg.ID + ".bnstall")
		comp.SetBNSync(func(ctx context.Context, step int64, slot int, vals []float64) error {
			if stall > 0 && slot == 0 {
				time.Sleep(stall) // fault injection: a member that does not compute
			}
			return w.reduceBN(ctx, step, slot, vals)
		})
	}
	return w.loop(ctx)
}

type runner struct {
	cfg   Config
	spec  job.Spec
	log   *slog.Logger
	cli   *clientv3.Client
	elect *cluster.Election
	comp  *Compute
	ps    *wire.Client // follows the servers' addresses (cluster.FollowRanks)
	cache *ShardCache
	man   *shard.Manifest
	m     *metrics
	hold  string // fault injection: a file that, while it exists, holds the worker between steps

	conn       *grpc.ClientConn
	coordAddr  string
	loggedAddr string // the last coordinator address logged
	work       *wire.WorkClient
	gen        uint64 // the coordinator generation of the last reply
}

// reduceBN exchanges a BatchNorm slot's sums with the other workers of the
// step, through the coordinator that gave this worker the step.
func (w *runner) reduceBN(ctx context.Context, step int64, slot int, vals []float64) error {
	if w.work == nil {
		return errors.New("synchronised batchnorm: no coordinator")
	}
	// the others may still be computing: wait as long as a step may last
	rctx, cancel := context.WithTimeout(ctx, w.spec.StepDeadline)
	defer cancel()
	rep, err := w.work.ReduceBN(rctx, &wire.BNRequest{RunID: w.cfg.Run, WorkerID: w.cfg.ID, Gen: w.gen, Step: step, Slot: slot, Values: vals})
	if err != nil {
		return fmt.Errorf("%w: %w", errBNExchange, err)
	}
	copy(vals, rep.Values)
	return nil
}

// errBNExchange marks a step's failure in its synchronised-BatchNorm
// exchange with the coordinator.
var errBNExchange = errors.New("batchnorm exchange with the coordinator")

// bnEnded reports whether a step failed because the coordinator ended its
// BatchNorm exchange (a rollback, a new leader's generation, the step
// decided without this worker, the leader stopping) or it was cancelled:
// expected, the worker asks for work again. A coordinator that cannot be
// reached is not (a failure of its own).
func bnEnded(err error) bool {
	if !errors.Is(err, errBNExchange) {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return true
	}
	switch status.Code(err) {
	case codes.Canceled, codes.FailedPrecondition:
		return true
	}
	return false
}

// coordinator (re)connects to the current leader. It logs a leader's
// address once, not at each reconnection to it (during a failover the
// dead leader's record stays until its lease expires).
func (w *runner) coordinator(ctx context.Context) (*wire.WorkClient, error) {
	for {
		l, err := w.elect.Leader(ctx)
		if err == nil && l.Member.Addrs[AddrGRPC] != "" {
			addr := l.Member.Addrs[AddrGRPC]
			if addr == w.coordAddr && w.work != nil {
				return w.work, nil
			}
			if w.conn != nil {
				w.conn.Close()
			}
			conn, err := grpc.NewClient(addr, wire.DialOptions(identity.ForPeer(w.cfg.TLS, w.cfg.Run, identity.Coordinator))...)
			if err != nil {
				return nil, err
			}
			w.conn, w.coordAddr, w.work = conn, addr, wire.NewWorkClient(conn)
			if addr != w.loggedAddr {
				w.loggedAddr = addr
				w.log.Info("coordinator", "addr", addr, "id", l.Member.ID)
			}
			return w.work, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a coordinator: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (w *runner) loop(ctx context.Context) error {
	defer func() {
		if w.conn != nil {
			w.conn.Close()
		}
	}()
	// the servers accept pulls once the coordinator has initialised them
	if err := w.pullRetry(ctx); err != nil {
		return err
	}
	done, loss := int64(-1), 0.0
	idle := false // told the parameter servers (SSP) since the last step
	askFail := &retry.Streak{Log: w.log, What: "asking for work"}
	pullFail := &retry.Streak{Log: w.log, What: "pulling the step's weights"}
	// failed steps (a parameter server restarting, the coordinator gone)
	// and refused pushes (late, or the step moved on) are logged when they
	// start and when a step succeeds again, with their count
	stepFail := &retry.Streak{Log: w.log, What: "running a step"}
	pushFail := &retry.Streak{Log: w.log, What: "pushing gradients"}
	var backoff retry.Backoff
	for {
		if w.cfg.Draining() {
			return w.leave(ctx, done, loss)
		}
		wc, err := w.coordinator(ctx)
		if err != nil {
			return err
		}
		rep, err := wc.Next(ctx, &wire.WorkRequest{RunID: w.cfg.Run, WorkerID: w.cfg.ID, Done: done, Version: w.comp.Version(), Loss: loss, Gen: w.gen})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, wire.ErrProtocolVersion) {
				return fmt.Errorf("coordinator at %s: %w", w.coordAddr, err)
			}
			// the coordinator may have died: find the new leader
			askFail.Fail(err)
			w.work, w.coordAddr = nil, ""
			if !backoff.Wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		askFail.OK()
		if rep.Gen != w.gen {
			// a new leader, or a rollback: what this worker did before is
			// not this generation's business, nor is the top-k residual of
			// its undone steps (a checkpoint holds none)
			if w.gen != 0 {
				w.ps.ResetResidual()
			}
			w.gen, done, idle = rep.Gen, -1, false
		}
		switch rep.Kind {
		case wire.WorkDone:
			w.logDone(done)
			return nil
		case wire.WorkWait:
			backoff.Reset()
			if w.spec.Mode == job.ModeSSP && !idle && done >= 0 {
				// no batch for now: stop counting as the slowest worker
				if err := w.ps.Idle(ctx, done+1); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					w.log.Warn("telling the parameter servers this worker is idle failed", "err", err)
				} else {
					idle = true
				}
			}
			continue
		}
		idle = false
		recs, err := w.cache.Lookup(ctx, shard.SplitTrain, rep.IDs)
		if err != nil {
			return err
		}
		// sync: the weights of exactly this step (after a rollback to a
		// checkpoint they are older than the ones the worker holds)
		if w.spec.Mode == job.ModeSync && w.comp.Version() != rep.Step {
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := w.comp.Pull(pctx, rep.Step)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if errors.Is(err, wire.ErrProtocolVersion) {
					return fmt.Errorf("parameter servers %v: %w", w.ps.Addrs(), err)
				}
				pullFail.Fail(err, "step", rep.Step, "servers", w.ps.Addrs())
				if !backoff.Wait(ctx) {
					return ctx.Err()
				}
				continue
			}
			pullFail.OK("step", rep.Step)
		}
		backoff.Reset()
		t0 := time.Now()
		loss, err = w.comp.Step(ctx, rep.Step, int(rep.Epoch), int(rep.Offset), recs)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// a refused push (late, or the step moved on) or an unreachable
			// parameter server (restarting) is not fatal: the coordinator
			// hands the records out again, and rolls the servers back to a
			// checkpoint if one lost its state; a server of another protocol
			// version is (it would refuse every step)
			if errors.Is(err, wire.ErrProtocolVersion) {
				return fmt.Errorf("parameter servers %v: %w", w.ps.Addrs(), err)
			}
			var rej *wire.RejectedError
			switch {
			case bnEnded(err):
				w.log.Info("step abandoned: the coordinator ended its batchnorm exchange", "step", rep.Step, "why", err)
			case errors.As(err, &rej):
				pushFail.Fail(err, "step", rep.Step, "reason", rej.Reason)
			default:
				stepFail.Fail(err, "step", rep.Step)
			}
			if perr := w.pullRetry(ctx); perr != nil {
				return perr
			}
			continue
		}
		done = rep.Step
		stepFail.OK("step", rep.Step)
		pushFail.OK("step", rep.Step)
		w.m.step(len(recs), loss, time.Since(t0), w.comp)
		w.m.stall.Set(w.cache.Stall().Seconds())
		if err := w.holdFault(ctx); err != nil {
			return err
		}
	}
}

// leave ends a worker told to stop (a preemption notice) between two
// steps. It reports its finished step, so that the coordinator counts the
// batch (async, SSP; in sync mode the step's decision did) and records its
// loss, and takes no other batch; the
// session's close then revokes its lease, and the leader stops giving it
// work at once. A batch the report's reply hands out goes back to the
// pool with the lease.
func (w *runner) leave(ctx context.Context, done int64, loss float64) error {
	if done >= 0 && w.work != nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := w.work.Next(rctx, &wire.WorkRequest{RunID: w.cfg.Run, WorkerID: w.cfg.ID, Done: done, Version: w.comp.Version(), Loss: loss, Gen: w.gen})
		cancel()
		if err != nil {
			w.log.Warn("preemption notice: reporting the last step failed", "step", done, "err", err)
		}
	}
	w.log.Info("preemption notice: leaving the run", "last_step", done)
	return job.ErrPreempted
}

// logDone logs the worker's totals at the end of the run.
func (w *runner) logDone(done int64) {
	c := w.comp
	total := c.ComputeTime + c.PushTime + c.PullTime
	w.log.Info("run done", "steps", done+1, "compute_s", c.ComputeTime.Seconds(), "input_s", c.InputTime.Seconds(),
		"push_s", c.PushTime.Seconds(), "push_span_s", c.PushSpan.Seconds(), "overlap", w.spec.Overlap,
		"pull_s", c.PullTime.Seconds(), "bn_sync_s", c.BNSyncTime.Seconds(), "input_stall_s", w.cache.Stall().Seconds(),
		"communication_share", math.Round(100*float64(c.PushTime+c.PullTime)/float64(max(total, 1)))/100,
		"compression", w.spec.WireCompression().Encoding.String(), "push_bytes", c.PushBytes, "pushes", c.Pushes,
		"push_bytes_per_step", c.PushBytes/uint64(max(c.Pushes, 1)))
}

// holdFault is the fault worker.<id>.hold: while its file exists, the
// worker waits here, between two steps, as one that is idle while a fault
// happens elsewhere.
func (w *runner) holdFault(ctx context.Context) error {
	if w.hold == "" {
		return nil
	}
	logged := false
	for {
		if _, err := os.Stat(w.hold); err != nil {
			if logged {
				w.log.Info("fault: released", "file", w.hold)
			}
			return nil
		}
		if !logged {
			w.log.Info("fault: holding between steps", "file", w.hold, "version", w.comp.Version())
			logged = true
		}
		if !retry.Sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// pullRetry pulls the current weights, retrying (with backoff) while the
// servers are unreachable or not initialised, until ctx ends; a server of
// another wire protocol version is an error at once.
func (w *runner) pullRetry(ctx context.Context) error {
	b := retry.Backoff{Base: 200 * time.Millisecond}
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := w.comp.Pull(pctx, 0)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, wire.ErrProtocolVersion) {
			return fmt.Errorf("parameter servers %v: %w", w.ps.Addrs(), err)
		}
		w.log.Debug("weights not available", "err", err, "servers", w.ps.Addrs())
		if !b.Wait(ctx) {
			return ctx.Err()
		}
	}
}
