package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/shard"
)

// Addrs keys of the coordinator's membership record.
const (
	AddrGRPC = "grpc"
)

// Config is one coordinator process (the leader or a standby).
type Config struct {
	Run         string
	ID          string
	Etcd        []string
	Listen      string // gRPC address; default a free loopback port
	MetricsAddr string // /metrics address; empty: none
	GossipBind  string
	Advertise   string // host peers dial this process at (see job.JoinConfig)
	SecretKey   []byte
	// TLS, if set, is mutual TLS on the gRPC server (workers' work
	// requests, parameter servers' step reports) and on the connections
	// to the parameter servers (certs.Config); nil is plaintext.
	TLS *tls.Config
	// EtcdAuth is the etcd client's TLS and credentials.
	EtcdAuth cluster.EtcdAuth
	Log      *slog.Logger
	// ProgressInterval is how often the leader publishes its progress for
	// tailor status; 0 means ProgressInterval (the constant).
	ProgressInterval time.Duration
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Run == "" || c.ID == "" || len(c.Etcd) == 0 {
		return errors.New("coordinator needs a run id, its own id and etcd endpoints")
	}
	return nil
}

// Run joins the run, waits to be elected, then leads it to the end: it
// initialises the parameter servers, hands out batches step by step, decides
// sync steps, validates after each epoch and keeps the best model. A standby
// waits in the election until the leader dies.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("coordinator listener: %w", err)
	}
	defer lis.Close()
	sess, err := job.Join(ctx, job.JoinConfig{Run: cfg.Run, Etcd: cfg.Etcd, Advertise: cfg.Advertise, MetricsAddr: cfg.MetricsAddr, GossipBind: cfg.GossipBind,
		SecretKey: cfg.SecretKey, EtcdAuth: cfg.EtcdAuth, Log: log,
		Self: cluster.Member{ID: cfg.ID, Role: cluster.RoleCoordinator, Addrs: map[string]string{AddrGRPC: lis.Addr().String()}}})
	if err != nil {
		return err
	}
	defer sess.Close(ctx)
	// a standby serves an empty registry until it leads
	sess.ServeMetrics(promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{}))
	spec, mem, cli, keys := sess.Spec, sess.Members, sess.Client, sess.Keys
	elect, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys, Self: mem.Self()})
	if err != nil {
		return err
	}
	log.Info("standing for election", "run", cfg.Run, "id", cfg.ID)
	// a standby stops campaigning when the run is over
	cctx, stopCampaign := context.WithCancel(ctx)
	defer stopCampaign()
	finished := make(chan struct{})
	go func() {
		if job.WaitDone(cctx, cli, cfg.Run) {
			close(finished)
			stopCampaign()
		}
	}()
	var term *cluster.Term
	for {
		term, err = elect.Campaign(cctx)
		select {
		case <-finished:
			log.Info("the run is over")
			if term != nil {
				_ = term.Resign(context.WithoutCancel(ctx))
			}
			return nil
		default:
		}
		if err != nil {
			return err
		}
		var status RunStatus
		if _, err := cluster.GetJSON(ctx, cli, keys.Status(), &status); err == nil && status.State == "done" {
			log.Info("the run is over")
			_ = term.Resign(context.WithoutCancel(ctx))
			return nil
		}
		log.Info("leading the run", "run", cfg.Run)
		// each term has its own metrics registry (its gauges start afresh)
		reg := prometheus.NewRegistry()
		sess.ServeMetrics(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		l := &leader{cfg: cfg, spec: spec, log: log, cli: cli, mem: mem, term: term, reg: reg,
			wake: make(chan struct{}), decided: make(chan int64, 16), reported: map[string]int64{}}
		err = l.run(ctx, lis)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !errors.Is(err, errLostLeadership) {
			return err
		}
		// etcd was out of reach longer than the election lease (or another
		// node took over): stand again; a new term goes on from the last
		// checkpoint. The gRPC server closed the listener: open it again
		// on the address the membership record publishes.
		log.Warn("lost leadership; standing for election again", "err", err)
		if lis, err = net.Listen("tcp", lis.Addr().String()); err != nil {
			return fmt.Errorf("coordinator listener: %w", err)
		}
		defer lis.Close()
	}
	st, _ := json.Marshal(RunStatus{State: "done", Model: filepath.Join(spec.Out, "model.tailor"), Finished: time.Now().UTC()})
	if _, err := cluster.Create(ctx, cli, keys.Status(), st, term.Guard()); err != nil && !errors.Is(err, cluster.ErrConflict) {
		return fmt.Errorf("record the run's end: %w", err)
	}
	_ = term.Resign(context.WithoutCancel(ctx))
	return nil
}

// RunStatus is the run's outcome, at Keys.Status.
type RunStatus struct {
	State    string    `json:"state"` // "done"
	Model    string    `json:"model"`
	Finished time.Time `json:"finished"`
}

type leader struct {
	cfg  Config
	spec job.Spec
	log  *slog.Logger
	cli  *clientv3.Client
	mem  *cluster.Membership
	term *cluster.Term
	reg  *prometheus.Registry

	mu     sync.Mutex
	sched  *Scheduler      // sync mode
	asched *AsyncScheduler // async and ssp modes
	steps  *Steps
	bn     *bnReducer // synchronised BatchNorm
	// benched workers are members that did not take part in a step they
	// were given (synchronised BatchNorm's deadline): no work for them
	// until they ask for it
	benched map[string]bool
	benchMu sync.Mutex
	wake    chan struct{} // closed and replaced when reservations change
	// the last step each worker reported finished
	reported map[string]int64
	decided  chan int64
	done     bool // the run is over
	// epoch statistics
	lossSum  float64
	lossN    int
	images   int
	epochT0  time.Time
	computeT time.Duration

	ck      *ckpt
	eval    *evaluator // end-of-epoch validation and the test report
	steplog stepLog
	// closed when a parameter server is lost during the current attempt,
	// or the watchdog rolls back; rollbackWhy says which
	rollback       chan struct{}
	rollbackClosed bool
	rollbackWhy    string
	psAddrs        []string      // the servers of the current attempt
	gen            atomic.Uint64 // this leader's generation: new at every (re)start from a checkpoint
	audit          auditLog      // spec.Audit: every consumed batch's records (nil file: off)
	auditSeq       int64         // batches consumed in the run (in checkpoints: the rollback point)
	curEpoch       int

	// the progress watchdog (watchdog.go), and what the leader is doing
	// (a phase constant): the watchdog's clock runs in training only
	wd            *watchdog
	phase         atomic.Value
	progressEvery time.Duration
	// memberList, if set, stands in for mem.Members in the watchdog's
	// diagnosis (tests)
	memberList func(cluster.Role) []cluster.Member

	stepsGauge, epochGauge, lossGauge prometheus.Gauge
	imagesCounter                     prometheus.Counter
	wdActions                         *prometheus.CounterVec
}

func (l *leader) run(ctx context.Context, lis net.Listener) error {
	spec := l.spec
	st, man, net, err := netspec.Open(ctx, spec.Data, spec.Seed, spec.StorePolicy(l.log))
	if err != nil {
		return err
	}
	wspec, tensors := netspec.Tensors(net)
	ev, err := newEvaluator(ctx, spec, st, man, net, l.log)
	if err != nil {
		return err
	}
	l.eval = ev

	// the parameter servers learn the tensors they hold from etcd
	wb, err := json.Marshal(wspec)
	if err != nil {
		return err
	}
	if _, err := cluster.Create(ctx, l.cli, cluster.RunKeys(spec.Run).WireSpec(), wb); err != nil && !errors.Is(err, cluster.ErrConflict) {
		return fmt.Errorf("publish the model spec: %w", err)
	}
	loc, err := job.OpenCheckpoints(ctx, spec, st, spec.StorePolicy(l.log))
	if err != nil {
		return err
	}
	l.ck = &ckpt{loc: loc, labels: man.Labels, val: ev.val}
	if l.steplog, err = openStepLog(spec.Out); err != nil {
		return err
	}
	defer l.steplog.close()
	if spec.Audit {
		if l.audit, err = openAuditLog(spec.Out); err != nil {
			return err
		}
		defer l.audit.close()
	}
	units, err := planUnits(spec, man)
	if err != nil {
		return err
	}

	l.steps, err = NewSteps(StepsConfig{RunID: spec.Run, Servers: spec.ParamServers, Quorum: spec.Quorum, Deadline: spec.StepDeadline,
		Commit: l.commit, Log: l.log})
	if err != nil {
		return err
	}
	defer l.steps.Close()
	l.bn = newBNReducer(spec.Run, l.steps.Participants, l.genNow, spec.StepDeadline, l.bench, l.log)
	defer l.bn.Close()
	l.wd = newWatchdog(watchdogFor(spec))
	l.registerMetrics()
	l.progressEvery = l.cfg.ProgressInterval
	if l.progressEvery <= 0 {
		l.progressEvery = ProgressInterval
	}
	defer l.startProgress(ctx, l.progressEvery)() // train-progress in etcd, for tailor status
	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go l.runWatchdog(wctx)
	gs := grpc.NewServer(wire.ServerOptions(l.cfg.TLS)...)
	wire.RegisterWork(gs, l)
	wire.RegisterSteps(gs, l.steps)
	go gs.Serve(lis)
	defer gs.Stop()

	events, stop := l.mem.Subscribe()
	defer stop()
	go l.watch(events)

	// A parameter server that dies takes its part of the weights with it:
	// the run pauses until every server is back (restarted, or another
	// process with its index), then all of them go back to the last
	// checkpoint and the run goes on from there.
	for {
		err := l.attempt(ctx, wspec, tensors, units)
		if err == nil || !l.rollingBack() || ctx.Err() != nil {
			return err
		}
		l.setPhase(phaseRollback)
		l.mu.Lock()
		why := l.rollbackWhy
		l.mu.Unlock()
		l.log.Warn("pausing, then rolling back to the last checkpoint", "why", why, "err", err)
		l.mu.Lock()
		l.sched, l.asched = nil, nil // workers wait
		l.broadcastLocked()
		l.mu.Unlock()
	}
}

// planUnits returns the function that cuts an epoch into units: pieces of
// the epoch's permutation of the whole split (shuffle "global"), or the same
// shard ranges every epoch ("units").
func planUnits(spec job.Spec, man *shard.Manifest) (func(epoch int) ([]Unit, error), error) {
	if spec.GlobalShuffle() {
		if _, err := man.Split(shard.SplitTrain); err != nil {
			return nil, err
		}
		return func(epoch int) ([]Unit, error) {
			return GlobalUnits(man, shard.SplitTrain, spec.Seed, epoch, spec.Batch)
		}, nil
	}
	units, err := Units(man, shard.SplitTrain, spec.UnitSize)
	if err != nil {
		return nil, err
	}
	return func(int) ([]Unit, error) { return units, nil }, nil
}

// errLostLeadership ends a term: the leader's election lease is gone.
var errLostLeadership = errors.New("coordinator: lost leadership")

// errRollback ends an attempt: a parameter server was lost.
var errRollback = errors.New("coordinator: rolling back to the last checkpoint")

// rollingBack reports whether the current attempt was told to roll back.
func (l *leader) rollingBack() bool {
	select {
	case <-l.rollbackCh():
		return true
	default:
		return false
	}
}

func (l *leader) rollbackCh() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rollback
}

// psLost starts a rollback, once per attempt, if m is one of the servers
// the attempt works with (not an earlier incarnation's late news).
func (l *leader) psLost(m cluster.Member) {
	l.mu.Lock()
	ours := slices.Contains(l.psAddrs, m.Addrs[AddrGRPC])
	l.mu.Unlock()
	if ours {
		l.startRollback("parameter server "+m.ID+" lost", func() {
			l.log.Warn("parameter server lost", "ps", m.ID, "addr", m.Addrs[AddrGRPC])
		})
	}
}

// startRollback ends the current attempt, for why, after calling announce
// (a log line, so that it comes before the rollback's); it reports false,
// without calling announce, if there is no attempt or it is already
// rolling back.
func (l *leader) startRollback(why string, announce func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rollback == nil || l.rollbackClosed {
		return false
	}
	announce()
	l.rollbackClosed, l.rollbackWhy = true, why
	close(l.rollback)
	return true
}

// attempt connects to the parameter servers, puts them at the newest
// checkpoint (or initialises them and takes checkpoint 0), and trains to
// the end of the run. It returns errRollback-wrapped errors when a
// parameter server is lost meanwhile.
func (l *leader) attempt(ctx context.Context, wspec wire.Spec, tensors [][]float32, units func(epoch int) ([]Unit, error)) error {
	spec := l.spec
	l.mu.Lock()
	l.rollback, l.rollbackClosed, l.rollbackWhy = make(chan struct{}), false, ""
	l.mu.Unlock()
	l.setPhase(phaseServers)
	psAddrs, err := cluster.WaitRanks(ctx, l.mem, cluster.RoleParamServer, spec.ParamServers, AddrGRPC)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.psAddrs = psAddrs
	l.mu.Unlock()
	ps, err := wire.NewClient(wire.ClientConfig{RunID: spec.Run, WorkerID: "coordinator", Addrs: psAddrs, Spec: wspec, TLS: l.cfg.TLS})
	if err != nil {
		return err
	}
	defer ps.Close()
	l.ck.ps = ps
	// a checkpoint of the job, if there is one, is where the run goes on
	// from (a restart, a new leader after a failover, a rollback);
	// otherwise the servers get the initial weights, and a checkpoint of
	// step 0 is taken at once so that there is always one to go back to
	l.setPhase(phaseRestore)
	meta, rs, err := l.resume(ctx)
	if err != nil {
		return l.orRollback(err)
	}
	if meta == nil {
		if err := ps.Init(ctx, tensors); err != nil && !isInitialised(err) {
			return l.orRollback(fmt.Errorf("initialise parameter servers: %w", err))
		}
		rs = &RunState{}
		if err := l.saveOrWarn(ctx, 0, *rs, 0, "start", false); err != nil {
			return err
		}
	} else {
		l.steplog.mark(l.ck.current + " (" + meta.Reason + ")")
	}
	// steps of the old timeline are forgotten; replies carry a new
	// generation, so workers' reports of undone steps are ignored
	l.steps.Reset()
	l.newGen()
	l.mu.Lock()
	l.auditSeq = rs.AuditSeq
	l.mu.Unlock()
	l.audit.rollback(rs.AuditSeq)

	step, asyncSteps := rs.Step, rs.AsyncSteps
	l.setPhase(phaseWorkers)
	if err := l.waitWorkers(ctx, meta != nil); err != nil {
		return err
	}
	for epoch := rs.Epoch; epoch < spec.Epochs; epoch++ {
		mid := epoch == rs.Epoch && rs.Sched != nil // resumed in the middle of this epoch
		units, err := units(epoch)
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.curEpoch = epoch
		switch {
		case spec.Mode == job.ModeSync && mid:
			l.sched, err = RestoreScheduler(units, spec.Seed, spec.Batch, *rs.Sched)
		case spec.Mode == job.ModeSync:
			l.sched = NewScheduler(units, spec.Seed, epoch, spec.Batch, step)
		case mid:
			l.asched, err = RestoreAsyncScheduler(units, spec.Seed, spec.Batch, *rs.Sched)
		default:
			l.asched = NewAsyncScheduler(units, spec.Seed, epoch, spec.Batch, asyncSteps)
		}
		if err != nil {
			l.mu.Unlock()
			return fmt.Errorf("resume: %w", err)
		}
		if l.asched != nil {
			l.asched.CutEvery(spec.CheckpointEvery) // async: a checkpoint every K batches
		}
		l.lossSum, l.lossN, l.images, l.epochT0, l.computeT = 0, 0, 0, time.Now(), 0
		if mid {
			// workers of the checkpoint that are not back give up their units
			l.dropAbsentLocked(rs.Sched)
			l.lossSum, l.lossN, l.images = rs.LossSum, rs.LossN, rs.Images
			l.epochT0 = time.Now().Add(-time.Duration(rs.Seconds * float64(time.Second)))
		}
		l.broadcastLocked()
		l.mu.Unlock()
		l.epochGauge.Set(float64(epoch + 1))
		if spec.Mode == job.ModeSync {
			step, err = l.epoch(ctx)
		} else {
			asyncSteps, err = l.asyncEpoch(ctx)
			step = 0 // async versions differ per server: take what they have
		}
		l.setPhase(phaseValidating) // the watchdog's clock stops
		if err != nil {
			return l.orRollback(err)
		}
		// every server has applied the epoch's last step: judge the weights
		if _, err := ps.Pull(ctx, step, tensors); err != nil {
			return l.orRollback(fmt.Errorf("pull weights after epoch %d: %w", epoch+1, err))
		}
		l.mu.Lock()
		secs := time.Since(l.epochT0).Seconds()
		ep := eval.Epoch{Epoch: epoch + 1, TrainLoss: l.lossSum / math.Max(float64(l.lossN), 1), LR: 0, Seconds: secs,
			ImgPerSec: float64(l.images) / secs}
		l.mu.Unlock()
		improved, err := l.eval.endEpoch(ctx, ep, len(l.mem.Members(cluster.RoleWorker)))
		if err != nil {
			return err
		}
		version := step
		if spec.Mode != job.ModeSync {
			version = -1 // quiesced: every server as it is
		}
		l.mu.Lock()
		seq := l.auditSeq
		l.mu.Unlock()
		l.setPhase(phaseCheckpoint)
		if err := l.saveOrWarn(ctx, version, RunState{Epoch: epoch + 1, Step: step, AsyncSteps: asyncSteps, AuditSeq: seq}, epoch+1, "epoch", improved); err != nil {
			return err
		}
		if l.rollingBack() {
			return errRollback
		}
	}
	l.mu.Lock()
	l.done = true
	l.broadcastLocked()
	l.mu.Unlock()
	l.setPhase(phaseTesting)
	if err := l.eval.testReport(ctx); err != nil {
		l.log.Warn("no test report", "err", err)
	}
	// give the workers a moment to hear "done" before the server stops
	select {
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
	}
	return nil
}

// orRollback returns errRollback (wrapping err) if a parameter server was
// lost meanwhile: the error is then a consequence of that loss.
func (l *leader) orRollback(err error) error {
	if l.rollingBack() {
		return fmt.Errorf("%w: %w", errRollback, err)
	}
	return err
}

func isInitialised(err error) bool {
	var rej *wire.RejectedError
	return errors.As(err, &rej) && rej.Reason == wire.ReasonInitialised
}

// epoch runs steps until every record of the epoch is consumed; it returns
// the next step number.
func (l *leader) epoch(ctx context.Context) (int64, error) {
	l.setPhase(phaseTraining)
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		select {
		case <-l.term.Done():
			return 0, errLostLeadership
		case <-l.rollbackCh():
			return 0, errRollback
		default:
		}
		live := l.liveWorkers()
		l.mu.Lock()
		if l.sched.Done() {
			step := l.sched.Step()
			l.mu.Unlock()
			return step, nil
		}
		if len(live) == 0 {
			l.mu.Unlock()
			time.Sleep(200 * time.Millisecond)
			continue
		}
		res, err := l.sched.Begin(live)
		if err != nil {
			l.mu.Unlock()
			return 0, err
		}
		step := l.sched.Step()
		if len(res) == 0 {
			// records are left, but held by workers that are not live: wait
			// for the membership to drop them
			l.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ids := make([]string, len(res))
		for i, b := range res {
			ids[i] = b.Worker
		}
		if err := l.steps.SetParticipants(step, ids); err != nil {
			l.mu.Unlock()
			return 0, err
		}
		l.broadcastLocked()
		l.mu.Unlock()
		l.stepsGauge.Set(float64(step))
		if err := l.waitDecided(ctx, step); err != nil {
			return 0, err
		}
		if k := int64(l.spec.CheckpointEvery); k > 0 && (step+1)%k == 0 {
			l.setPhase(phaseCheckpoint)
			err := l.stepCheckpoint(ctx)
			l.setPhase(phaseTraining)
			if err != nil {
				return 0, err
			}
		}
	}
}

// stepCheckpoint checkpoints a sync run between two steps.
func (l *leader) stepCheckpoint(ctx context.Context) error {
	l.mu.Lock()
	if l.sched.Done() {
		l.mu.Unlock()
		return nil // the epoch's end checkpoints after validation
	}
	st, err := l.sched.Export()
	rs := RunState{Epoch: l.curEpoch, Step: l.sched.Step(), Sched: &st, LossSum: l.lossSum, LossN: l.lossN, Images: l.images, AuditSeq: l.auditSeq,
		Seconds: time.Since(l.epochT0).Seconds()}
	l.mu.Unlock()
	if err != nil {
		return err
	}
	return l.saveOrWarn(ctx, rs.Step, rs, l.curEpoch, "steps", false)
}

// asyncCheckpoint checkpoints an async or SSP run at a cut: no batch is
// out, so no gradient is in flight and every server saves its part as it
// is (version -1), as at an epoch's end; the run state holds the
// scheduler's position, so a resume goes on mid-epoch. Then batches are
// handed out again.
func (l *leader) asyncCheckpoint(ctx context.Context) error {
	l.mu.Lock()
	st, err := l.asched.Export()
	rs := RunState{Epoch: l.curEpoch, Sched: &st, AsyncSteps: st.Steps, LossSum: l.lossSum, LossN: l.lossN, Images: l.images,
		AuditSeq: l.auditSeq, Seconds: time.Since(l.epochT0).Seconds()}
	l.mu.Unlock()
	if err == nil {
		err = l.saveOrWarn(ctx, -1, rs, l.curEpoch, "steps", false)
	}
	l.mu.Lock()
	if l.asched != nil {
		l.asched.Resume()
	}
	l.broadcastLocked()
	l.mu.Unlock()
	return err
}

// dropAbsentLocked releases the units of the checkpoint's workers that are
// not live now (resumed with fewer or other workers).
func (l *leader) dropAbsentLocked(st *SchedState) {
	live := map[string]bool{}
	for _, w := range l.liveWorkers() {
		live[w] = true
	}
	owners := map[string]bool{}
	for _, u := range st.Ledger.State {
		if u.Owner != "" {
			owners[u.Owner] = true
		}
	}
	for w := range st.Pos {
		owners[w] = true
	}
	for w := range owners {
		if live[w] {
			continue
		}
		l.log.Info("resumed without a worker of the checkpoint: its units go back to the pool", "worker", w)
		if l.sched != nil {
			l.sched.Drop(w)
		}
		if l.asched != nil {
			l.asched.Drop(w)
		}
	}
}

// asyncEpoch waits until the Next calls have consumed every record of the
// epoch, checkpointing at every cut (spec.CheckpointEvery batches); it
// returns the workers' step counters.
func (l *leader) asyncEpoch(ctx context.Context) (map[string]int64, error) {
	l.setPhase(phaseTraining)
	for {
		l.mu.Lock()
		if l.asched.Done() {
			steps := l.asched.Steps()
			l.asched = nil // workers wait while the epoch is judged
			l.mu.Unlock()
			return steps, nil
		}
		if l.asched.AtCut() {
			l.mu.Unlock()
			l.setPhase(phaseCheckpoint)
			err := l.asyncCheckpoint(ctx)
			l.setPhase(phaseTraining)
			if err != nil {
				return nil, err
			}
			continue
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.term.Done():
			return nil, errLostLeadership
		case <-l.rollbackCh():
			return nil, errRollback
		case <-wake:
		}
	}
}

// waitDecided waits for commit to record the decision of step.
func (l *leader) waitDecided(ctx context.Context, step int64) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.term.Done():
			return errLostLeadership
		case <-l.rollbackCh():
			return errRollback
		case s := <-l.decided:
			if s == step {
				return nil
			}
		}
	}
}

// liveWorkers returns the live workers in rank order, less the benched.
func (l *leader) liveWorkers() []string {
	var ids []string
	l.benchMu.Lock()
	defer l.benchMu.Unlock()
	for _, m := range l.mem.Members(cluster.RoleWorker) {
		if !l.benched[m.ID] {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// bench takes workers that missed a step's synchronised BatchNorm out of
// the step and of the next ones, as if they had died, until they ask for
// work again: a member that does not compute must not hold every step.
func (l *leader) bench(step int64, missing []string) {
	for _, w := range missing {
		l.log.Warn("worker left out of a step: no work for it until it asks", "worker", w, "step", step)
	}
	l.benchWorkers(missing)
}

// benchWorkers benches ids and drops them from the open and later steps
// and from the schedule (dropWorker): their reservations and units go back
// to the pool.
func (l *leader) benchWorkers(ids []string) {
	l.benchMu.Lock()
	if l.benched == nil {
		l.benched = map[string]bool{}
	}
	for _, w := range ids {
		l.benched[w] = true
	}
	l.benchMu.Unlock()
	for _, w := range ids {
		l.dropWorker(w)
	}
}

// dropWorker takes a worker out of the open and later steps and out of the
// schedule: its reservation and units go back to the pool.
func (l *leader) dropWorker(id string) {
	l.steps.Drop(id)
	l.bn.Reevaluate() // its BatchNorm exchanges go on without it
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sched != nil {
		l.sched.Drop(id)
	}
	if l.asched != nil {
		l.asched.Drop(id)
	}
	l.broadcastLocked()
}

// commit records a sync-step decision: the included workers' batches are
// consumed. (Persisting the ledger in etcd, for resume, is the
// checkpoint issue's work.)
func (l *leader) commit(ctx context.Context, d wire.Decision) (wire.Decision, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sched == nil {
		// the attempt ended (a rollback) while the step was being decided
		return d, fmt.Errorf("step %d: no sync epoch running", d.Step)
	}
	done, err := l.sched.Decide(d.Step, d.Included)
	if err != nil {
		return d, err
	}
	for _, b := range done {
		l.images += len(b.IDs)
		l.auditLocked(b)
	}
	if len(done) > 0 {
		l.progressed(d.Step) // an empty step (every gradient missing somewhere) is none
	}
	l.imagesCounter.Add(float64(len(done)))
	l.bn.Finished(d.Step)
	l.broadcastLocked()
	select {
	case l.decided <- d.Step:
	default:
	}
	return d, nil
}

// watch drops workers the membership declares dead or gone.
func (l *leader) watch(events <-chan cluster.Event) {
	for ev := range events {
		if ev.Member.Role == cluster.RoleParamServer {
			// a rollback is costly: only the lease's expiry (or a leave)
			// counts, not gossip's first suspicion, which load can raise
			switch ev.Kind {
			case cluster.EventGone, cluster.EventLeft:
				l.psLost(ev.Member)
			}
			continue
		}
		if ev.Member.Role != cluster.RoleWorker {
			continue
		}
		switch ev.Kind {
		case cluster.EventFailed, cluster.EventGone, cluster.EventLeft:
			l.log.Info("worker lost", "worker", ev.Member.ID, "event", ev.Kind)
			l.dropWorker(ev.Member.ID)
		}
	}
}

func (l *leader) broadcastLocked() {
	close(l.wake)
	l.wake = make(chan struct{})
}

// ReduceBN implements wire.WorkHandler: synchronised BatchNorm.
func (l *leader) ReduceBN(ctx context.Context, req *wire.BNRequest) (*wire.BNReply, error) {
	return l.bn.Reduce(ctx, req)
}

// Next implements wire.WorkHandler: it answers when the worker has a batch
// in a step after the one it finished, when the run is over, or after a
// while with "wait".
func (l *leader) Next(ctx context.Context, req *wire.WorkRequest) (*wire.WorkReply, error) {
	if req.RunID != l.spec.Run {
		return nil, wire.RejectStatus(wire.ReasonRunID, req.RunID)
	}
	rep := &wire.WorkReply{RunID: req.RunID, WorkerID: req.WorkerID, Kind: wire.WorkWait}
	rep.Gen = l.genNow()
	l.mu.Lock()
	if req.Gen != rep.Gen {
		// the worker's finished step belongs to another leader, or to steps
		// a rollback to a checkpoint undid: not a report for this one
		req.Done = -1
	}
	l.benchMu.Lock()
	delete(l.benched, req.WorkerID) // it asks: it may work again
	l.benchMu.Unlock()
	last, ok := l.reported[req.WorkerID]
	fresh := req.Done >= 0 && (!ok || req.Done > last)
	if fresh {
		// each finished step's loss counts once, however often the worker asks
		l.reported[req.WorkerID] = req.Done
		l.steplog.add(req.Done, l.curEpoch, req.WorkerID, req.Loss)
		l.lossSum += req.Loss
		l.lossN++
		l.lossGauge.Set(req.Loss)
	}
	l.mu.Unlock()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		l.mu.Lock()
		if l.done {
			l.mu.Unlock()
			rep.Kind = wire.WorkDone
			return l.waitReply(rep), nil
		}
		if l.sched != nil {
			// not a step the worker was dropped from (gossip took it for
			// dead): the step goes on without it, and it would only fail
			if b, ok := l.sched.Reservation(req.WorkerID); ok && b.Step > req.Done && slices.Contains(l.steps.Participants(b.Step), req.WorkerID) {
				l.mu.Unlock()
				return l.batchReply(rep, b), nil
			}
		}
		if l.asched != nil {
			held := l.asched.out[req.WorkerID]
			b, ok, err := l.asched.Next(req.WorkerID, req.Done)
			if err != nil {
				l.mu.Unlock()
				return nil, err
			}
			if held.IDs != nil && req.Done >= held.Step {
				l.images += len(held.IDs)
				l.imagesCounter.Inc()
				l.auditLocked(held)
				l.progressed(held.Step)
			}
			if l.asched.Done() || l.asched.AtCut() {
				l.broadcastLocked()
			}
			if ok {
				l.mu.Unlock()
				return l.batchReply(rep, b), nil
			}
			if fresh && l.spec.Mode == job.ModeSSP {
				// at once, not after the long poll: the worker tells the
				// parameter servers it is idle, so that it stops holding
				// back the workers still finishing the epoch
				l.mu.Unlock()
				return l.waitReply(rep), nil
			}
			req.Done = -1 // reported; now just wait for the next epoch
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-timeout.C:
			return l.waitReply(rep), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// newGen starts a new generation: replies carry it, and reports of steps
// finished under another one are ignored.
func (l *leader) newGen() {
	var b [8]byte
	_, _ = rand.Read(b[:])
	l.gen.Store(binary.LittleEndian.Uint64(b[:]) | 1)
	if l.bn != nil {
		l.bn.Reset() // the workers in a BatchNorm exchange start over
	}
}

func (l *leader) genNow() uint64 { return l.gen.Load() }

// waitReply is rep (a wait or done) with the current generation: a long
// poll may have begun under the one before.
func (l *leader) waitReply(rep *wire.WorkReply) *wire.WorkReply {
	rep.Gen = l.genNow()
	return rep
}

func (l *leader) batchReply(rep *wire.WorkReply, b Batch) *wire.WorkReply {
	// the generation of the batch's scheduler: a long poll may have begun
	// under the one before
	rep.Gen = l.genNow()
	rep.Kind, rep.Step, rep.Epoch, rep.IDs, rep.Offset = wire.WorkBatch, b.Step, int64(b.Epoch), b.IDs, uint64(b.Offset)
	return rep
}

func (l *leader) registerMetrics() {
	l.stepsGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_coordinator_step", Help: "Current step."})
	l.epochGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_coordinator_epoch", Help: "Current epoch (from 1)."})
	l.lossGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_coordinator_loss", Help: "Last batch loss reported by a worker."})
	l.imagesCounter = prometheus.NewCounter(prometheus.CounterOpts{Name: "tailor_coordinator_batches_total", Help: "Batches applied."})
	l.reg.MustRegister(l.stepsGauge, l.epochGauge, l.lossGauge, l.imagesCounter)
	l.registerWatchdogMetrics()
}
