package coordinator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/retry"
)

// The progress watchdog. While the leader trains with work out (phase
// "training"), every completed step — sync: a step decided with at least
// one gradient; async and ssp: a batch reported — is progress. When none
// comes for the spec's stall timeout, the leader logs one error naming
// what it waits for (the step, the participants whose gradients are
// missing and on which servers, the workers holding batches, the servers
// not live at the attempt's address), publishes the stall in its progress
// record, and acts, each action after a wait that doubles:
//
//  1. re-dispatch: the workers that have not delivered are benched and
//     dropped, as the membership drops a dead worker (dropWorker): a sync
//     step ends with the gradients every server holds, and the
//     reservations of the others go back to the pool once it is decided;
//     async batches out go back to the pool at once. A benched worker
//     gets work again when it asks for some. A sync step that no gradient
//     reached on every server cannot end so, and is left to the rollback.
//  2. then roll back: a new attempt from the last checkpoint, the path a
//     lost parameter server takes (the servers' addresses are read again
//     from the membership, every server is restored, a new generation).
//
// The first action waits at least the grace (sync: the step deadline), so
// that the step's own deadlines act first. The clock stops outside
// training (waiting for servers or workers, checkpointing, validating): a
// slow validation is no stall. Progress ends a stall with one line giving
// its length, and re-arms the watchdog.

// stallAction is what the watchdog asks of the leader.
type stallAction int

const (
	stallNone       stallAction = iota
	stallReport                 // a stall has begun: say what the run waits for
	stallRedispatch             // the first action
	stallRollback               // every later action
)

func (a stallAction) String() string {
	switch a {
	case stallReport:
		return "report"
	case stallRedispatch:
		return "redispatch"
	case stallRollback:
		return "rollback"
	}
	return "none"
}

// watchdogConfig configures a watchdog.
type watchdogConfig struct {
	// Timeout is how long training may go without progress before it is a
	// stall; 0 turns the watchdog off.
	Timeout time.Duration
	// Grace is the least wait between the report and the first action.
	Grace time.Duration
	// MaxWait caps the wait between two actions; 0 means 8 × Timeout.
	MaxWait time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// watchdog decides when training has stalled and when to act; the leader
// tells it of progress and phases, asks it with Check and does the acting.
// It is safe for concurrent use.
type watchdog struct {
	cfg watchdogConfig

	mu       sync.Mutex
	armed    bool
	pausedAt time.Time // when the clock stopped (zero: never armed yet)
	last     time.Time // the last progress, on the stall clock (paused time left out)
	lastWall time.Time // the last progress, on the wall clock
	stalled  bool      // the stall was reported
	due      time.Time // the next action
	actions  int       // actions taken in this stall
	backoff  retry.Backoff
}

// watchdogFor is the watchdog of a run: the spec's stall timeout, and in
// sync runs a grace of the step deadline, so that a step's own deadlines
// (the servers' gradients, synchronised BatchNorm) act before the
// watchdog does.
func watchdogFor(spec job.Spec) watchdogConfig {
	cfg := watchdogConfig{Timeout: spec.StallAfter()}
	if spec.Mode == job.ModeSync {
		cfg.Grace = spec.StepDeadline
	}
	return cfg
}

func newWatchdog(cfg watchdogConfig) *watchdog {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 8 * cfg.Timeout
	}
	return &watchdog{cfg: cfg, backoff: retry.Backoff{Base: cfg.Timeout, Max: cfg.MaxWait}}
}

// clockLocked is the stall clock: now while armed, the moment of the
// pause while paused.
func (w *watchdog) clockLocked() time.Time {
	if w.armed || w.pausedAt.IsZero() {
		return w.cfg.Now()
	}
	return w.pausedAt
}

// Arm starts the clock: the leader trains, with work out. Time spent
// paused does not count towards a stall.
func (w *watchdog) Arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.armed {
		return
	}
	now := w.cfg.Now()
	if w.pausedAt.IsZero() {
		w.last = now
	} else {
		shift := now.Sub(w.pausedAt)
		w.last = w.last.Add(shift)
		w.due = w.due.Add(shift)
	}
	w.armed, w.pausedAt = true, time.Time{}
}

// Pause stops the clock: the leader waits for servers or workers,
// checkpoints or validates.
func (w *watchdog) Pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.armed {
		w.armed, w.pausedAt = false, w.cfg.Now()
	}
}

// Progress records progress. If a stall had been reported, it is over:
// Progress returns its length and the actions taken in it, and ended.
func (w *watchdog) Progress() (stall time.Duration, actions int, ended bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clockLocked()
	if w.stalled {
		stall, actions, ended = now.Sub(w.last), w.actions, true
	}
	w.last, w.lastWall = now, w.cfg.Now()
	w.stalled, w.actions = false, 0
	w.backoff.Reset()
	return stall, actions, ended
}

// Check says what to do now: stallReport once no progress has come for
// Timeout, then stallRedispatch, then stallRollback at every later
// action, the waits between them doubling from Timeout (the first at
// least Grace) up to MaxWait. It also returns the stall's length so far
// (0 while progressing).
func (w *watchdog) Check() (stallAction, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cfg.Timeout <= 0 || !w.armed {
		return stallNone, w.stalledLocked()
	}
	now := w.cfg.Now()
	since := now.Sub(w.last)
	if !w.stalled {
		if since < w.cfg.Timeout {
			return stallNone, 0
		}
		w.stalled = true
		w.backoff.Reset()
		w.due = now.Add(max(w.backoff.Next(), w.cfg.Grace))
		return stallReport, since
	}
	if now.Before(w.due) {
		return stallNone, since
	}
	w.actions++
	w.due = now.Add(w.backoff.Next())
	if w.actions == 1 {
		return stallRedispatch, since
	}
	return stallRollback, since
}

// Stalled returns how long the reported stall has lasted (paused time left
// out); 0 when there is none.
func (w *watchdog) Stalled() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stalledLocked()
}

func (w *watchdog) stalledLocked() time.Duration {
	if !w.stalled {
		return 0
	}
	return w.clockLocked().Sub(w.last)
}

// Actions returns the actions taken in the current stall.
func (w *watchdog) Actions() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.actions
}

// LastProgress returns the wall time of the last progress (zero: none yet).
func (w *watchdog) LastProgress() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastWall
}

// tick is how often the leader asks the watchdog.
func (w *watchdog) tick() time.Duration {
	return min(max(w.cfg.Timeout/10, 10*time.Millisecond), time.Second)
}

// Phases of the leader, for its progress record; only in phaseTraining
// does the watchdog's clock run.
const (
	phaseServers    = "waiting for parameter servers"
	phaseRestore    = "restoring the parameter servers"
	phaseWorkers    = "waiting for workers"
	phaseTraining   = "training"
	phaseCheckpoint = "checkpointing"
	phaseValidating = "validating"
	phaseRollback   = "rolling back"
	phaseTesting    = "testing"
	phasePreempt    = "waiting for a preempted member to leave"
)

// setPhase records what the leader does; the watchdog runs in training
// only.
func (l *leader) setPhase(p string) {
	l.phase.Store(p)
	if p == phaseTraining {
		l.wd.Arm()
	} else {
		l.wd.Pause()
	}
}

func (l *leader) phaseNow() string {
	p, _ := l.phase.Load().(string)
	return p
}

// progressed tells the watchdog that training made progress (a step or
// batch completed); the end of a stall is logged.
func (l *leader) progressed(step int64) {
	if d, n, ended := l.wd.Progress(); ended {
		l.log.Info("progress resumed", "stalled_s", round1(d.Seconds()), "actions", n, "step", step)
	}
}

// registerWatchdogMetrics adds the stall gauge and the actions counter.
func (l *leader) registerWatchdogMetrics() {
	stalled := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tailor_coordinator_stalled_seconds",
		Help: "How long training has made no progress, once the watchdog has declared a stall (0: progressing)."},
		func() float64 { return l.wd.Stalled().Seconds() })
	l.wdActions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailor_coordinator_watchdog_actions_total",
		Help: "Watchdog actions by kind: report (a stall declared), redispatch, rollback."}, []string{"kind"})
	for _, a := range []stallAction{stallReport, stallRedispatch, stallRollback} {
		l.wdActions.WithLabelValues(a.String())
	}
	l.reg.MustRegister(stalled, l.wdActions)
}

// runWatchdog asks the watchdog every tick, and acts, until ctx ends.
func (l *leader) runWatchdog(ctx context.Context) {
	if l.wd.cfg.Timeout <= 0 {
		return
	}
	t := time.NewTicker(l.wd.tick())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.checkWatchdog()
	}
}

// checkWatchdog does what the watchdog says, with one log line.
func (l *leader) checkWatchdog() {
	act, stalled := l.wd.Check()
	if act == stallNone {
		return
	}
	d := l.diagnose()
	attrs := append(d.attrs(stalled), "timeout", l.wd.cfg.Timeout)
	switch act {
	case stallReport:
		l.wdActions.WithLabelValues(act.String()).Inc()
		l.log.Error("no progress", attrs...)
		l.journal.add(Event{Kind: EventStalled, Detail: fmt.Sprintf("no progress for %s; waiting for %s", stalled.Round(time.Second), d.String())})
	case stallRedispatch:
		l.redispatch(d, attrs)
	case stallRollback:
		l.stallRollback(d, stalled, attrs)
	}
}

// redispatch benches the workers that have not delivered (d), so that the
// others go on and their work goes back to the pool.
func (l *leader) redispatch(d stallDiag, attrs []any) {
	ws := d.redispatchable()
	if len(ws) == 0 {
		l.log.Warn("no progress: nothing to re-dispatch (no gradient of the step is on every server, or no work is out)", attrs...)
		return
	}
	l.wdActions.WithLabelValues(stallRedispatch.String()).Inc()
	l.log.Warn("no progress: re-dispatching the work of the workers that have not delivered", append(attrs, "benched", ws)...)
	l.benchWorkers(ws)
}

// stallRollback rolls the run back to the last checkpoint, as a lost
// parameter server does.
func (l *leader) stallRollback(d stallDiag, stalled time.Duration, attrs []any) {
	if d.LiveWorkers == 0 {
		l.log.Warn("no progress: no live worker to train with; not rolling back", attrs...)
		return
	}
	a := l.att.Load()
	ok := a != nil && a.startRollback(fmt.Sprintf("no progress for %v", stalled.Round(time.Second)), func() {
		l.wdActions.WithLabelValues(stallRollback.String()).Inc()
		l.log.Warn("no progress: rolling back to the last checkpoint", attrs...)
	})
	if !ok {
		l.log.Warn("no progress: a rollback is already under way", attrs...)
	}
}

// stallProgress fills the stall's fields of a progress record.
func (l *leader) stallProgress(p *Progress) {
	p.Phase = l.phaseNow()
	if t := l.wd.LastProgress(); !t.IsZero() {
		p.LastStep = t.UTC()
	}
	s := l.wd.Stalled()
	if s <= 0 {
		return
	}
	d := l.diagnose()
	p.StalledFor = round1(s.Seconds())
	p.WaitingFor = d.String()
	p.WaitingWorkers, p.WaitingServers = d.Workers, d.Servers()
	p.StallActions = l.wd.Actions()
}
