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
			board: newBoard(), decided: make(chan int64, 16)}
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

	board *board       // the epoch's schedule and counters, shared by the parts
	work  *workService // the workers' Work calls
	steps *Steps
	bn    *bnReducer // synchronised BatchNorm
	// benched workers are members that did not take part in a step they
	// were given (synchronised BatchNorm's deadline): no work for them
	// until they ask for it
	benched map[string]bool
	benchMu sync.Mutex
	decided chan int64

	ck   *ckpt
	eval *evaluator // end-of-epoch validation and the test report
	// mu guards the rollback fields and psAddrs
	mu sync.Mutex
	// closed when a parameter server is lost during the current attempt,
	// or the watchdog rolls back; rollbackWhy says which
	rollback       chan struct{}
	rollbackClosed bool
	rollbackWhy    string
	psAddrs        []string      // the servers of the current attempt
	gen            atomic.Uint64 // this leader's generation: new at every (re)start from a checkpoint

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
	if l.board.steplog, err = openStepLog(spec.Out); err != nil {
		return err
	}
	defer l.board.steplog.close()
	if spec.Audit {
		if l.board.audit, err = openAuditLog(spec.Out); err != nil {
			return err
		}
		defer l.board.audit.close()
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
	l.work = newWorkService(spec.Run, spec.Mode == job.ModeSSP, l, l.bn)
	wire.RegisterWork(gs, l.work)
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
		l.board.stop() // workers wait
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
		l.board.steplog.mark(l.ck.current + " (" + meta.Reason + ")")
	}
	// steps of the old timeline are forgotten; replies carry a new
	// generation, so workers' reports of undone steps are ignored
	l.steps.Reset()
	l.newGen()
	l.board.mu.Lock()
	l.board.seq = rs.AuditSeq
	l.board.audit.rollback(rs.AuditSeq)
	l.board.mu.Unlock()

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
		b := l.board
		b.mu.Lock()
		b.epoch = epoch
		switch {
		case spec.Mode == job.ModeSync && mid:
			b.sched, err = RestoreScheduler(units, spec.Seed, spec.Batch, *rs.Sched)
		case spec.Mode == job.ModeSync:
			b.sched = NewScheduler(units, spec.Seed, epoch, spec.Batch, step)
		case mid:
			b.asched, err = RestoreAsyncScheduler(units, spec.Seed, spec.Batch, *rs.Sched)
		default:
			b.asched = NewAsyncScheduler(units, spec.Seed, epoch, spec.Batch, asyncSteps)
		}
		if err != nil {
			b.mu.Unlock()
			return fmt.Errorf("resume: %w", err)
		}
		if b.asched != nil {
			b.asched.CutEvery(spec.CheckpointEvery) // async: a checkpoint every K batches
		}
		b.stats = epochStats{t0: time.Now()}
		if mid {
			// workers of the checkpoint that are not back give up their units
			l.dropAbsentLocked(rs.Sched)
			b.stats = epochStats{lossSum: rs.LossSum, lossN: rs.LossN, images: rs.Images,
				t0: time.Now().Add(-time.Duration(rs.Seconds * float64(time.Second)))}
		}
		b.broadcastLocked()
		b.mu.Unlock()
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
		st := l.board.view().stats
		secs := time.Since(st.t0).Seconds()
		ep := eval.Epoch{Epoch: epoch + 1, TrainLoss: st.lossSum / math.Max(float64(st.lossN), 1), LR: 0, Seconds: secs,
			ImgPerSec: float64(st.images) / secs}
		improved, err := l.eval.endEpoch(ctx, ep, len(l.mem.Members(cluster.RoleWorker)))
		if err != nil {
			return err
		}
		version := step
		if spec.Mode != job.ModeSync {
			version = -1 // quiesced: every server as it is
		}
		l.board.mu.Lock()
		seq := l.board.seq
		l.board.mu.Unlock()
		l.setPhase(phaseCheckpoint)
		if err := l.saveOrWarn(ctx, version, RunState{Epoch: epoch + 1, Step: step, AsyncSteps: asyncSteps, AuditSeq: seq}, epoch+1, "epoch", improved); err != nil {
			return err
		}
		if l.rollingBack() {
			return errRollback
		}
	}
	l.board.finish()
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
		b := l.board
		b.mu.Lock()
		if b.sched.Done() {
			step := b.sched.Step()
			b.mu.Unlock()
			return step, nil
		}
		if len(live) == 0 {
			b.mu.Unlock()
			time.Sleep(200 * time.Millisecond)
			continue
		}
		res, err := b.sched.Begin(live)
		if err != nil {
			b.mu.Unlock()
			return 0, err
		}
		step := b.sched.Step()
		if len(res) == 0 {
			// records are left, but held by workers that are not live: wait
			// for the membership to drop them
			b.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ids := make([]string, len(res))
		for i, bt := range res {
			ids[i] = bt.Worker
		}
		if err := l.steps.SetParticipants(step, ids); err != nil {
			b.mu.Unlock()
			return 0, err
		}
		b.broadcastLocked()
		b.mu.Unlock()
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
	b := l.board
	b.mu.Lock()
	if b.sched.Done() {
		b.mu.Unlock()
		return nil // the epoch's end checkpoints after validation
	}
	st, err := b.sched.Export()
	rs := b.runStateLocked(&st)
	rs.Step = b.sched.Step()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return l.saveOrWarn(ctx, rs.Step, rs, rs.Epoch, "steps", false)
}

// asyncCheckpoint checkpoints an async or SSP run at a cut: no batch is
// out, so no gradient is in flight and every server saves its part as it
// is (version -1), as at an epoch's end; the run state holds the
// scheduler's position, so a resume goes on mid-epoch. Then batches are
// handed out again.
func (l *leader) asyncCheckpoint(ctx context.Context) error {
	b := l.board
	b.mu.Lock()
	st, err := b.asched.Export()
	rs := b.runStateLocked(&st)
	rs.AsyncSteps = st.Steps
	b.mu.Unlock()
	if err == nil {
		err = l.saveOrWarn(ctx, -1, rs, rs.Epoch, "steps", false)
	}
	b.mu.Lock()
	if b.asched != nil {
		b.asched.Resume()
	}
	b.broadcastLocked()
	b.mu.Unlock()
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
		l.board.dropLocked(w)
	}
}

// asyncEpoch waits until the Next calls have consumed every record of the
// epoch, checkpointing at every cut (spec.CheckpointEvery batches); it
// returns the workers' step counters.
func (l *leader) asyncEpoch(ctx context.Context) (map[string]int64, error) {
	l.setPhase(phaseTraining)
	b := l.board
	for {
		b.mu.Lock()
		if b.asched.Done() {
			steps := b.asched.Steps()
			b.asched = nil // workers wait while the epoch is judged
			b.mu.Unlock()
			return steps, nil
		}
		if b.asched.AtCut() {
			b.mu.Unlock()
			l.setPhase(phaseCheckpoint)
			err := l.asyncCheckpoint(ctx)
			l.setPhase(phaseTraining)
			if err != nil {
				return nil, err
			}
			continue
		}
		wake := b.wake
		b.mu.Unlock()
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

// unbench lets a benched worker work again: it asks for work.
func (l *leader) unbench(id string) {
	l.benchMu.Lock()
	delete(l.benched, id)
	l.benchMu.Unlock()
}

// dropWorker takes a worker out of the open and later steps and out of the
// schedule: its reservation and units go back to the pool.
func (l *leader) dropWorker(id string) {
	l.steps.Drop(id)
	l.bn.Reevaluate() // its BatchNorm exchanges go on without it
	b := l.board
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropLocked(id)
	b.broadcastLocked()
}

// commit records a sync-step decision: the included workers' batches are
// consumed. (Persisting the ledger in etcd, for resume, is the
// checkpoint issue's work.)
func (l *leader) commit(ctx context.Context, d wire.Decision) (wire.Decision, error) {
	b := l.board
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sched == nil {
		// the attempt ended (a rollback) while the step was being decided
		return d, fmt.Errorf("step %d: no sync epoch running", d.Step)
	}
	done, err := b.sched.Decide(d.Step, d.Included)
	if err != nil {
		return d, err
	}
	for _, bt := range done {
		b.consumedLocked(bt)
	}
	if len(done) > 0 {
		l.progressed(d.Step) // an empty step (every gradient missing somewhere) is none
	}
	l.imagesCounter.Add(float64(len(done)))
	l.bn.Finished(d.Step)
	b.broadcastLocked()
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

func (l *leader) registerMetrics() {
	l.stepsGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_coordinator_step", Help: "Current step."})
	l.epochGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_coordinator_epoch", Help: "Current epoch (from 1)."})
	l.lossGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_coordinator_loss", Help: "Last batch loss reported by a worker."})
	l.imagesCounter = prometheus.NewCounter(prometheus.CounterOpts{Name: "tailor_coordinator_batches_total", Help: "Batches applied."})
	l.reg.MustRegister(l.stepsGauge, l.epochGauge, l.lossGauge, l.imagesCounter)
	l.registerWatchdogMetrics()
}
