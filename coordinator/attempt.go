package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/wire"
)

// An attempt is one go at training. Every time a leader starts training —
// a fresh leader after a failover, a restarted run, or a rollback — it
// makes a new attempt and goes the same way (runAttempt): wait for every
// parameter server, restore the newest checkpoint into all of them (or
// initialise them and take checkpoint 0), forget the old timeline's sync
// steps, publish the attempt's generation, wait for the workers, and train
// the remaining epochs. A parameter server lost meanwhile, or the
// watchdog, ends the attempt with a rollback (docs/cluster.md,
// "Checkpoints, resume and rollback").
type attempt struct {
	// gen is the attempt's generation: Work replies carry it once the
	// servers are restored, and reports of steps finished under another
	// one are ignored
	gen uint64
	// rollback is closed when the attempt must end: a parameter server
	// was lost, or the watchdog rolls back; why says which
	rollback chan struct{}
	ps       *wire.Client // the attempt's servers; set by connect

	mu      sync.Mutex
	closed  bool
	why     string
	psAddrs []string // the servers' addresses, by index
}

// errRollback ends an attempt: a parameter server was lost.
var errRollback = errors.New("coordinator: rolling back to the last checkpoint")

func newAttempt() *attempt {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &attempt{gen: binary.LittleEndian.Uint64(b[:]) | 1, rollback: make(chan struct{})}
}

// startRollback ends the attempt, for why, after calling announce (a log
// line, so that it comes before the rollback's); it reports false, without
// calling announce, if the attempt is already rolling back.
func (a *attempt) startRollback(why string, announce func()) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	announce()
	a.closed, a.why = true, why
	close(a.rollback)
	return true
}

// rollingBack reports whether the attempt was told to roll back.
func (a *attempt) rollingBack() bool {
	select {
	case <-a.rollback:
		return true
	default:
		return false
	}
}

// reason says why the attempt rolls back.
func (a *attempt) reason() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.why
}

// orRollback returns errRollback (wrapping err) if the attempt rolls back:
// the error is then a consequence of that (a server lost meanwhile).
func (a *attempt) orRollback(err error) error {
	if a.rollingBack() {
		return fmt.Errorf("%w: %w", errRollback, err)
	}
	return err
}

func (a *attempt) setServers(addrs []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.psAddrs = addrs
}

// servers returns the attempt's servers' addresses, by index.
func (a *attempt) servers() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.psAddrs)
}

// serves reports whether addr is one of the attempt's servers.
func (a *attempt) serves(addr string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Contains(a.psAddrs, addr)
}

// runAttempt connects to the parameter servers, puts them at the newest
// checkpoint (or initialises them and takes checkpoint 0), and trains to
// the end of the run. It returns errRollback-wrapped errors when the
// attempt rolls back meanwhile.
func (l *leader) runAttempt(ctx context.Context, a *attempt, m *runModel) error {
	if err := l.connect(ctx, a, m.wspec); err != nil {
		return err
	}
	defer a.ps.Close()
	rs, resumed, err := l.restore(ctx, a, m.tensors)
	if err != nil {
		return err
	}
	l.setPhase(phaseWorkers)
	if err := l.waitWorkers(ctx, a, resumed); err != nil {
		return err
	}
	if err := l.train(ctx, a, m, rs); err != nil {
		return err
	}
	return l.finish(ctx)
}

// connect waits for every parameter server and opens the attempt's client.
func (l *leader) connect(ctx context.Context, a *attempt, wspec wire.Spec) error {
	spec := l.spec
	l.setPhase(phaseServers)
	psAddrs, err := cluster.WaitRanks(ctx, l.mem, cluster.RoleParamServer, spec.ParamServers, AddrGRPC)
	if err != nil {
		return err
	}
	a.setServers(psAddrs)
	a.ps, err = wire.NewClient(wire.ClientConfig{RunID: spec.Run, WorkerID: "coordinator", Addrs: psAddrs, Spec: wspec, TLS: l.cfg.TLS})
	if err != nil {
		return err
	}
	return nil
}

// restore puts the servers where the run goes on from: a checkpoint of the
// job, if there is one (a restart, a new leader after a failover, a
// rollback); otherwise the initial weights, and a checkpoint of step 0 is
// taken at once so that there is always one to go back to. Then the old
// timeline is forgotten and the attempt's generation published. It reports
// whether the run resumed from a checkpoint.
func (l *leader) restore(ctx context.Context, a *attempt, tensors [][]float32) (*RunState, bool, error) {
	l.setPhase(phaseRestore)
	meta, rs, err := l.ck.resume(ctx, a.ps)
	if err != nil {
		return nil, false, a.orRollback(err)
	}
	if meta == nil {
		if err := a.ps.Init(ctx, tensors); err != nil && !isInitialised(err) {
			return nil, false, a.orRollback(fmt.Errorf("initialise parameter servers: %w", err))
		}
		rs = &RunState{}
		if err := l.ck.saveOrWarn(ctx, a.ps, cut{version: 0, state: *rs, reason: "start"}); err != nil {
			return nil, false, err
		}
	} else {
		l.board.steplog.mark(l.ck.current + " (" + meta.Reason + ")")
	}
	// TensorBoard: the epochs from here on are (re)written by this attempt
	msg := "start"
	if meta != nil {
		msg = "resumed from checkpoint " + l.ck.current
	}
	if err := l.eval.val.StartSession(msg); err != nil {
		l.log.Warn("tensorboard event file", "err", err)
	}
	l.eval.uploadEvents(ctx)
	l.eval.restored()
	l.journal.restored(l.eval.val.History, l.eval.val.Best)
	// steps of the old timeline are forgotten; replies carry a new
	// generation, so workers' reports of undone steps are ignored
	l.steps.Reset()
	l.publishGen(a.gen)
	b := l.board
	b.mu.Lock()
	b.seq = rs.AuditSeq
	b.audit.rollback(rs.AuditSeq)
	b.mu.Unlock()
	return rs, meta != nil, nil
}

func isInitialised(err error) bool {
	var rej *wire.RejectedError
	return errors.As(err, &rej) && rej.Reason == wire.ReasonInitialised
}

// train runs the epochs from rs's on: each one is scheduled, trained,
// validated and checkpointed.
func (l *leader) train(ctx context.Context, a *attempt, m *runModel, rs *RunState) error {
	step, asyncSteps := rs.Step, rs.AsyncSteps
	for epoch := rs.Epoch; epoch < l.spec.Epochs; epoch++ {
		if l.cfg.Draining() {
			// a preemption notice: the epoch's end (or the resume) is
			// the checkpoint to go on from
			return errPreempted
		}
		var mid *RunState // resumed in the middle of this epoch
		if epoch == rs.Epoch && rs.Sched != nil {
			mid = rs
		}
		if err := l.startEpoch(epoch, m.units, step, asyncSteps, mid); err != nil {
			return err
		}
		var err error
		if l.spec.Mode == job.ModeSync {
			step, err = l.syncEpoch(ctx, a)
		} else {
			asyncSteps, err = l.asyncEpoch(ctx, a)
			step = 0 // async versions differ per server: take what they have
		}
		l.setPhase(phaseValidating) // the watchdog's clock stops
		if err != nil {
			return a.orRollback(err)
		}
		if err := l.endEpoch(ctx, a, m.tensors, epoch, step, asyncSteps); err != nil {
			return err
		}
	}
	return nil
}

// startEpoch puts epoch's scheduler on the board: a new one starting at
// step (sync) or with the workers' step counters asyncSteps, or, resumed
// in the middle of the epoch (mid), the checkpoint's.
func (l *leader) startEpoch(epoch int, units func(int) ([]Unit, error), step int64, asyncSteps map[string]int64, mid *RunState) error {
	spec := l.spec
	us, err := units(epoch)
	if err != nil {
		return err
	}
	b := l.board
	b.mu.Lock()
	defer b.mu.Unlock()
	b.epoch = epoch
	switch {
	case spec.Mode == job.ModeSync && mid != nil:
		b.sched, err = RestoreScheduler(us, spec.Seed, spec.Batch, *mid.Sched)
	case spec.Mode == job.ModeSync:
		b.sched = NewScheduler(us, spec.Seed, epoch, spec.Batch, step)
	case mid != nil:
		b.asched, err = RestoreAsyncScheduler(us, spec.Seed, spec.Batch, *mid.Sched)
	default:
		b.asched = NewAsyncScheduler(us, spec.Seed, epoch, spec.Batch, asyncSteps)
	}
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if b.asched != nil {
		b.asched.CutEvery(spec.CheckpointEvery) // async: a checkpoint every K batches
	}
	step0 := step
	if spec.Mode != job.ModeSync {
		step0 = 0
		for _, s := range asyncSteps {
			step0 += s
		}
	}
	total := 0
	for _, u := range us {
		total += u.Len
	}
	b.stats = epochStats{t0: time.Now(), step0: step0, total: total}
	if mid != nil {
		// workers of the checkpoint that are not back give up their units
		l.dropAbsentLocked(mid.Sched)
		if mid.EpochStep > 0 || mid.Epoch == 0 { // older checkpoints lack it: the step resumed at
			step0 = mid.EpochStep
		}
		b.stats = epochStats{lossSum: mid.LossSum, lossN: mid.LossN, images: mid.Images,
			t0: time.Now().Add(-time.Duration(mid.Seconds * float64(time.Second))), step0: step0, total: total}
	}
	b.broadcastLocked()
	l.epochGauge.Set(float64(epoch + 1))
	return nil
}

// endEpoch judges the weights once every server has applied the epoch's
// last step (step; async: 0, as they are), then checkpoints.
func (l *leader) endEpoch(ctx context.Context, a *attempt, tensors [][]float32, epoch int, step int64, asyncSteps map[string]int64) error {
	if _, err := a.ps.Pull(ctx, step, tensors); err != nil {
		return a.orRollback(fmt.Errorf("pull weights after epoch %d: %w", epoch+1, err))
	}
	v := l.board.view()
	secs := time.Since(v.stats.t0).Seconds()
	ep := eval.Epoch{Epoch: epoch + 1, TrainLoss: v.stats.lossSum / math.Max(float64(v.stats.lossN), 1),
		LR: l.spec.AdamConfig().LRAt(v.stats.step0), Seconds: secs, ImgPerSec: float64(v.stats.images) / secs}
	improved, err := l.eval.endEpoch(ctx, ep, len(l.mem.Members(cluster.RoleWorker)))
	if err != nil {
		return err
	}
	if last := l.eval.last(); last != nil {
		l.journal.epoch(*last, l.eval.val.Labels, l.eval.val.Best)
	}
	version := step
	if l.spec.Mode != job.ModeSync {
		version = -1 // quiesced: every server as it is
	}
	l.setPhase(phaseCheckpoint)
	rs := RunState{Epoch: epoch + 1, Step: step, AsyncSteps: asyncSteps, AuditSeq: v.seq}
	if err := l.ck.saveOrWarn(ctx, a.ps, cut{version: version, state: rs, epochs: epoch + 1, reason: "epoch", best: improved}); err != nil {
		return err
	}
	if a.rollingBack() {
		return errRollback
	}
	return nil
}

// finish ends the run: workers are told "done", and the kept model is
// scored on the test split.
func (l *leader) finish(ctx context.Context) error {
	l.board.finish()
	l.journal.add(Event{Kind: EventDone, Detail: fmt.Sprintf("%d epochs trained", l.spec.Epochs)})
	l.setPhase(phaseTesting)
	if err := l.eval.testReport(ctx); err != nil {
		l.log.Warn("no test report", "err", err)
	}
	// give the workers a moment to hear "done" before the server stops
	l.waitWorkersLeave(ctx, doneGrace)
	return nil
}

// doneGrace bounds how long a leader whose run is over waits for the
// workers to hear "done" and leave.
const doneGrace = 2 * time.Second

// await waits until wake is closed, or the attempt ends: ctx, the term
// lost, a rollback.
func (l *leader) await(ctx context.Context, a *attempt, wake <-chan struct{}) error {
	select {
	case <-wake:
		return nil
	case <-l.drainWake():
		// a preemption notice wakes the loop once; it sees Draining
		l.drainSeen.Store(true)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-l.lost:
		return errLostLeadership
	case <-a.rollback:
		return errRollback
	}
}

// drainWake is the preemption notice until await has woken on it.
func (l *leader) drainWake() <-chan struct{} {
	if l.drainSeen.Load() {
		return nil
	}
	return l.cfg.Drain
}

// ended returns why the attempt has ended (as await), if it has.
func (l *leader) ended(ctx context.Context, a *attempt) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-l.lost:
		return errLostLeadership
	case <-a.rollback:
		return errRollback
	default:
		return nil
	}
}
