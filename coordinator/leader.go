package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/shard"
)

// leader is one term of an elected coordinator: it leads the run until its
// end or until it loses the election lease. It is made of parts, each in
// its file:
//
//	run.go         Run: the election; a candidate leads one term after another
//	leader.go      the term: setup, the services, attempts one after another
//	attempt.go     an attempt: servers restored from a checkpoint, epochs
//	               trained, validated and checkpointed; rolled back when a
//	               server is lost
//	board.go       the epoch's schedulers and counters, which the parts share
//	work.go        the Work service: the workers' Next and ReduceBN calls
//	sync.go        the sync epoch loop: steps opened, decisions committed
//	async.go       the async and SSP epoch loop, with its checkpoint cuts
//	members.go     the membership: live, benched and lost workers and servers
//	evaluate.go    end-of-epoch validation and the test report
//	checkpoint.go  checkpoints: taken, verified, published, resumed
//	steps.go       sync-step decisions (the parameter servers' Steps calls);
//	               decide.go how one step is decided
//	syncbn.go      synchronised BatchNorm
//	watchdog.go    the progress watchdog; stall.go what a stall waits for;
//	               progress.go the progress record
//	preempt.go     a preemption notice: a checkpoint, then the term resigned
type leader struct {
	cfg  Config
	spec job.Spec
	log  *slog.Logger
	cli  *clientv3.Client
	mem  *cluster.Membership
	term *cluster.Term
	lost <-chan struct{} // closed when the term ends (term.Done)
	reg  *prometheus.Registry

	board   *board       // the epoch's schedule and counters, shared by the parts
	work    *workService // the workers' Work calls
	steps   *Steps       // sync-step decisions
	bn      *bnReducer   // synchronised BatchNorm
	benched benchSet     // workers given no work until they ask for it
	decided chan int64   // sync steps, as commit records them

	journal *journal // the run's event log and history in etcd (journal.go)
	// lostAt is when this coordinator's previous term was lost to an
	// expired election lease (zero: none), lostErr why
	lostAt  time.Time
	lostErr error
	ck      *ckpt                   // checkpoints
	eval    *evaluator              // end-of-epoch validation and the test report
	att     atomic.Pointer[attempt] // the current attempt (nil before the first)
	gen     atomic.Uint64           // the generation replies carry: the current attempt's, once it has restored

	drainSeen atomic.Bool  // await has woken on the preemption notice (cfg.Drain)
	preempts  *preemptions // the members' preemption requests (preempt.go)

	// the progress watchdog (watchdog.go), and what the leader is doing
	// (a phase constant): the watchdog's clock runs in training only
	wd            *watchdog
	phase         atomic.Value
	progressEvery time.Duration
	// memberList, if set, stands in for mem.Members (tests)
	memberList func(cluster.Role) []cluster.Member

	stepsGauge, epochGauge, lossGauge prometheus.Gauge
	imagesCounter                     prometheus.Counter
	wdActions                         *prometheus.CounterVec
}

// errLostLeadership ends a term: the leader's election lease is gone.
var errLostLeadership = errors.New("coordinator: lost leadership")

// runModel is what every attempt trains: the tensors the servers hold (the
// leader's copy of them is the evaluator's net) and the epochs' units.
type runModel struct {
	wspec   wire.Spec
	tensors [][]float32
	units   func(epoch int) ([]Unit, error)
}

// run leads the run to its end, or until the term is lost.
func (l *leader) run(ctx context.Context, lis net.Listener) error {
	defer l.startJournal(ctx)()
	m, err := l.open(ctx)
	defer l.eval.closeEvents()
	if err != nil {
		return err
	}
	if err := l.openLogs(); err != nil {
		return err
	}
	defer l.board.closeLogs()
	if err := l.startDeciders(); err != nil {
		return err
	}
	defer l.steps.Close()
	defer l.bn.Close()
	defer l.startMonitors(ctx)()
	defer l.serve(lis)()
	events, stop := l.mem.Subscribe()
	defer stop()
	go l.watch(events)
	pctx, stopPreempts := context.WithCancel(ctx)
	defer stopPreempts()
	go l.watchPreempts(pctx)
	return l.attempts(ctx, m)
}

// startJournal reads the run's journal and records the term's start: a
// failover when the progress record names another coordinator and the run
// was not over. The returned func writes it a last time.
func (l *leader) startJournal(ctx context.Context) (stop func()) {
	keys := cluster.RunKeys(l.spec.Run)
	l.journal = loadJournal(ctx, l.cli, keys, l.term.Guard, l.cfg.ID, l.log)
	var p Progress
	previous := ""
	if _, err := cluster.GetJSON(ctx, l.cli, keys.TrainProgress(), &p); err == nil && !p.Done {
		previous = p.Leader
	}
	if previous == "" && !l.lostAt.IsZero() {
		// its own term ended early (the progress record may have gone
		// with its lease): this term is the same coordinator's again
		previous = l.cfg.ID
	}
	stop = l.journal.start(ctx, previous)
	l.journal.termLost(l.lostAt, l.lostErr)
	return stop
}

// open reads the data's manifest and builds the net, the evaluator and the
// checkpoint store, and publishes the tensors' spec for the servers.
func (l *leader) open(ctx context.Context) (*runModel, error) {
	spec := l.spec
	st, man, net, err := netspec.Open(ctx, spec.Data, spec.Seed, spec.StorePolicy(l.log))
	if err != nil {
		return nil, err
	}
	wspec, tensors := netspec.Tensors(net)
	if l.eval, err = newEvaluator(ctx, spec, st, man, net, l.log); err != nil {
		return nil, err
	}
	// the parameter servers learn the tensors they hold from etcd
	wb, err := json.Marshal(wspec)
	if err != nil {
		return nil, err
	}
	if _, err := cluster.Create(ctx, l.cli, cluster.RunKeys(spec.Run).WireSpec(), wb); err != nil && !errors.Is(err, cluster.ErrConflict) {
		return nil, fmt.Errorf("publish the model spec: %w", err)
	}
	loc, err := job.OpenCheckpoints(ctx, spec, st, spec.StorePolicy(l.log))
	if err != nil {
		return nil, err
	}
	l.ck = &ckpt{journal: l.journal, spec: spec, cli: l.cli, guard: l.term.Guard, log: l.log, loc: loc, labels: man.Labels, val: l.eval.val, flush: l.board.flushLogs}
	if err := l.eval.openEvents(loc, spec); err != nil {
		return nil, err
	}
	units, err := planUnits(spec, man)
	if err != nil {
		return nil, err
	}
	return &runModel{wspec: wspec, tensors: tensors, units: units}, nil
}

// openLogs opens steps.csv and, with spec.Audit, audit.log.
func (l *leader) openLogs() (err error) {
	b := l.board
	if b.steplog, err = openStepLog(l.spec.Out); err != nil {
		return err
	}
	if l.spec.Audit {
		if b.audit, err = openAuditLog(l.spec.Out); err != nil {
			b.steplog.close()
			return err
		}
	}
	return nil
}

// startDeciders makes the sync-step decider and synchronised BatchNorm.
func (l *leader) startDeciders() (err error) {
	spec := l.spec
	l.steps, err = NewSteps(StepsConfig{RunID: spec.Run, Servers: spec.ParamServers, Quorum: spec.Quorum, Deadline: spec.StepDeadline,
		Commit: l.commit, Log: l.log})
	if err != nil {
		return err
	}
	l.bn = newBNReducer(spec.Run, l.steps.Participants, l.genNow, spec.StepDeadline, l.bench, l.log)
	return nil
}

// startMonitors registers the metrics and starts the progress record (in
// etcd, for tailor status) and the watchdog; the returned func stops them.
func (l *leader) startMonitors(ctx context.Context) (stop func()) {
	l.wd = newWatchdog(watchdogFor(l.spec))
	l.registerMetrics()
	l.progressEvery = l.cfg.ProgressInterval
	if l.progressEvery <= 0 {
		l.progressEvery = ProgressInterval
	}
	stopProgress := l.startProgress(ctx, l.progressEvery)
	wctx, stopWatchdog := context.WithCancel(ctx)
	go l.runWatchdog(wctx)
	return func() {
		stopWatchdog()
		stopProgress()
	}
}

// serve answers the workers' Work calls and the servers' Steps calls on
// lis until the returned func is called.
func (l *leader) serve(lis net.Listener) (stop func()) {
	gs := grpc.NewServer(wire.ServerOptions(l.cfg.TLS, l.spec.Run)...)
	l.work = newWorkService(l.spec.Run, l.spec.Mode == job.ModeSSP, l, l.bn)
	wire.RegisterWork(gs, l.work)
	wire.RegisterSteps(gs, l.steps)
	go gs.Serve(lis)
	return gs.Stop
}

// attempts trains in attempts until one ends the run. A parameter server
// that dies takes its part of the weights with it: the run pauses until
// every server is back (restarted, or another process with its index), then
// all of them go back to the last checkpoint and the run goes on from there
// in a new attempt; the watchdog's rollback takes the same path.
func (l *leader) attempts(ctx context.Context, m *runModel) error {
	for {
		a := newAttempt()
		l.att.Store(a)
		err := l.runAttempt(ctx, a, m)
		if err == nil || !a.rollingBack() || ctx.Err() != nil {
			return err
		}
		l.setPhase(phaseRollback)
		l.journal.add(Event{Kind: EventRollback, Detail: a.reason()})
		l.log.Warn("pausing, then rolling back to the last checkpoint", "why", a.reason(), "err", err)
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

// publishGen makes gen the generation replies carry; the workers in a
// BatchNorm exchange start over.
func (l *leader) publishGen(gen uint64) {
	l.gen.Store(gen)
	if l.bn != nil {
		l.bn.Reset()
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
