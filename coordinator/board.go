package coordinator

import (
	"slices"
	"sync"
	"time"
)

// board is what the leader's parts share while a run trains: the epoch's
// scheduler (sync or async; nil for neither while nothing is handed out),
// the epoch's counters, whether the run is over, and a broadcast that
// wakes whoever waits for any of it to change. The epoch loops write it,
// the Work service reads it (through the leader's workSource), the
// membership watch drops workers from it, checkpoints copy it. Its fields
// are guarded by mu, but for the logs, which are set before training
// starts and lock themselves.
type board struct {
	mu     sync.Mutex
	sched  *Scheduler      // sync mode
	asched *AsyncScheduler // async and ssp modes
	over   bool            // every epoch is trained: workers are told "done"
	// wake is closed and replaced (broadcast) whenever the schedule, the
	// run's end or the membership changes
	wake  chan struct{}
	epoch int // the epoch in progress, from 0
	stats epochStats
	// seq counts the batches consumed in the run (in checkpoints: the
	// rollback point of audit.log)
	seq     int64
	audit   auditLog // spec.Audit: every consumed batch's records (nil file: off)
	steplog stepLog  // every finished step's loss, per worker
}

// epochStats are the epoch's numbers so far.
type epochStats struct {
	lossSum float64 // of the losses workers reported
	lossN   int
	images  int // applied
	t0      time.Time
	// step0 is the parameter servers' update count when the epoch
	// started (sync: its first step; async: the workers' steps summed),
	// which gives the epoch's learning rate
	step0 int64
	total int // the epoch's records
}

func newBoard() *board { return &board{wake: make(chan struct{})} }

// broadcastLocked wakes every waiter of the current wake channel.
func (b *board) broadcastLocked() {
	close(b.wake)
	b.wake = make(chan struct{})
}

// broadcast is broadcastLocked for callers without the lock.
func (b *board) broadcast() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.broadcastLocked()
}

// wakeCh is the channel the next broadcast closes: read it before looking
// at what it announces, and no change is missed.
func (b *board) wakeCh() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.wake
}

// consumedLocked counts a batch the parameter servers applied, and logs it
// with spec.Audit.
func (b *board) consumedLocked(bt Batch) {
	b.stats.images += len(bt.IDs)
	b.audit.add(b.seq, bt)
	b.seq++
}

// dropLocked takes a worker out of the schedule: its units go back to the
// pool.
func (b *board) dropLocked(id string) {
	if b.sched != nil {
		b.sched.Drop(id)
	}
	if b.asched != nil {
		b.asched.Drop(id)
	}
}

// finish marks the run over: workers asking for work are told "done".
func (b *board) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.over = true
	b.broadcastLocked()
}

// syncDone reports whether the sync epoch's records are all consumed, and
// the next step.
func (b *board) syncDone() (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sched == nil {
		return 0, false
	}
	return b.sched.Step(), b.sched.Done()
}

// stop takes the schedulers away (a rollback): workers are told to wait.
func (b *board) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sched, b.asched = nil, nil
	b.broadcastLocked()
}

// boardView is a copy of what the progress record, the watchdog and the
// epoch's end read.
type boardView struct {
	stats       epochStats
	seq         int64
	over        bool
	sync, async bool  // a scheduler of that kind is set
	open        bool  // sync: a step is open
	step        int64 // sync: the open or next step
	holders     []string
}

func (b *board) view() boardView {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := boardView{stats: b.stats, seq: b.seq, over: b.over, sync: b.sched != nil, async: b.asched != nil}
	if b.sched != nil {
		v.open, v.step = b.sched.Open(), b.sched.Step()
	}
	if b.asched != nil {
		v.holders = slices.Clone(b.asched.Holders())
	}
	return v
}

// The leader is the Work service's workSource: it answers from the board.

func (l *leader) generation() uint64 { return l.genNow() }

func (l *leader) asked(worker string) { l.unbench(worker) }

func (l *leader) finished(worker string, step int64, loss float64) {
	b := l.board
	b.mu.Lock()
	b.steplog.add(step, b.epoch, worker, loss)
	b.stats.lossSum += loss
	b.stats.lossN++
	b.mu.Unlock()
	l.lossGauge.Set(loss)
}

func (l *leader) offer(worker string, done int64) (offer, error) {
	b := l.board
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over {
		return offer{over: true}, nil
	}
	if b.sched != nil {
		// not a step the worker was dropped from (gossip took it for
		// dead): the step goes on without it, and it would only fail
		if bt, ok := b.sched.Reservation(worker); ok && bt.Step > done && slices.Contains(l.steps.Participants(bt.Step), worker) {
			return offer{batch: bt, ok: true}, nil
		}
	}
	var o offer
	if b.asched != nil {
		var err error
		if o, err = l.asyncOfferLocked(worker, done); err != nil || o.ok {
			return o, err
		}
	}
	o.wake = b.wake
	return o, nil
}

// asyncOfferLocked hands worker its next batch of the async epoch; the
// batch it held counts as consumed if done says it finished it.
func (l *leader) asyncOfferLocked(worker string, done int64) (offer, error) {
	b := l.board
	held := b.asched.out[worker]
	bt, ok, err := b.asched.Next(worker, done)
	if err != nil {
		return offer{}, err
	}
	if held.IDs != nil && done >= held.Step {
		b.consumedLocked(held)
		l.imagesCounter.Inc()
		l.progressed(held.Step)
	}
	if b.asched.Done() || b.asched.AtCut() {
		b.broadcastLocked() // the epoch loop: the epoch's end, or a cut
	}
	return offer{batch: bt, ok: ok, async: true}, nil
}

// runStateLocked is the run state of a checkpoint in the middle of the
// epoch, the scheduler's state being st.
func (b *board) runStateLocked(st *SchedState) RunState {
	return RunState{Epoch: b.epoch, Sched: st, LossSum: b.stats.lossSum, LossN: b.stats.lossN, Images: b.stats.images,
		AuditSeq: b.seq, Seconds: time.Since(b.stats.t0).Seconds(), EpochStep: b.stats.step0}
}

// closeLogs flushes and closes the logs.
func (b *board) closeLogs() {
	b.audit.close()
	b.steplog.close()
}

// flushLogs writes the logs' buffered lines to their files.
func (b *board) flushLogs() {
	b.steplog.flush()
	b.audit.flush()
}
