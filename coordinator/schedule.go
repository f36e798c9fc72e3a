package coordinator

import (
	"errors"
	"fmt"
	"sort"
)

// Batch is one worker's work for one step: records of one unit.
type Batch struct {
	Step   int64
	Epoch  int
	Worker string
	Unit   int
	From   int      // positions [From, To) of the unit's visiting order
	To     int      //
	IDs    []uint64 // dataset-wide record IDs, in visiting order
	// Offset is, in a sync step, where the batch starts in the step's
	// global batch: the records of the participants before it.
	Offset int
}

// Scheduler turns an epoch's ledger into lockstep (sync) steps. At the start
// of step t it reserves the next batch of every live worker that has work:
// those workers are the step's participants. When the step is decided, the
// included workers' batches are consumed; a participant that was excluded
// (late, or dead) keeps its position and is given the same records again.
type Scheduler struct {
	units  []Unit
	seed   uint64
	batch  int
	ledger *Ledger
	pos    map[string]position // worker → unit it works on and next position
	res    map[string]Batch    // reservations of the open step
	step   int64
	open   bool
	orders map[int][]int // unit → visiting order, this epoch
	// dropped workers whose reservation in the open step awaits the
	// decision: their gradient may still have been applied
	dropped map[string]bool
}

type position struct{ unit, next int }

// Scheduler errors.
var (
	ErrStepOpen     = errors.New("coordinator: a step is already open")
	ErrNoStep       = errors.New("coordinator: no step is open")
	ErrWrongStep    = errors.New("coordinator: decision for another step")
	ErrNotIncluded  = errors.New("coordinator: included worker was not a participant")
	ErrEpochRunning = errors.New("coordinator: epoch is not finished")
)

// NewScheduler starts epoch with the given units, seed and per-worker batch
// size; step is the first step number.
func NewScheduler(units []Unit, seed uint64, epoch, batch int, step int64) *Scheduler {
	return &Scheduler{units: units, seed: seed, batch: batch, ledger: NewLedger(units, seed, epoch),
		pos: map[string]position{}, step: step, orders: map[int][]int{}, dropped: map[string]bool{}}
}

// Ledger is the epoch's ledger (read-only use).
func (s *Scheduler) Ledger() *Ledger { return s.ledger }

// Step is the number of the open step, or of the next one.
func (s *Scheduler) Step() int64 { return s.step }

func (s *Scheduler) order(u int) []int {
	o, ok := s.orders[u]
	if !ok {
		o = s.units[u].RecordOrder(s.seed, s.ledger.Epoch)
		s.orders[u] = o
	}
	return o
}

// Begin opens the next step for the live workers (any order). It returns the
// reservations, one per participant in worker order; workers without work
// (the epoch's remaining units are held by others) get none. When nobody
// has work, no step opens and Begin returns none.
func (s *Scheduler) Begin(live []string) ([]Batch, error) {
	if s.open {
		return nil, ErrStepOpen
	}
	ws := append([]string(nil), live...)
	sort.Strings(ws)
	s.res = map[string]Batch{}
	var out []Batch
	offset := 0
	for _, w := range ws {
		p, ok := s.pos[w]
		if !ok || p.next >= s.units[p.unit].Len {
			u, from, err := s.ledger.Assign(w)
			if errors.Is(err, ErrEpochEnded) {
				delete(s.pos, w)
				continue
			}
			if err != nil {
				return nil, err
			}
			p = position{unit: u.ID, next: from}
			s.pos[w] = p
		}
		u := s.units[p.unit]
		to := min(p.next+s.batch, u.Len)
		b := Batch{Step: s.step, Epoch: s.ledger.Epoch, Worker: w, Unit: u.ID, From: p.next, To: to, Offset: offset}
		for _, i := range s.order(u.ID)[p.next:to] {
			b.IDs = append(b.IDs, u.RecordID(i))
		}
		offset += len(b.IDs)
		s.res[w] = b
		out = append(out, b)
	}
	if len(out) == 0 {
		// nobody has work in this step (the epoch's remaining records are
		// held by workers not live right now): no step opens
		s.res = nil
		return nil, nil
	}
	s.open = true
	return out, nil
}

// Open reports whether a step is open (reserved, not yet decided).
func (s *Scheduler) Open() bool { return s.open }

// Reservation returns worker's batch in the open step.
func (s *Scheduler) Reservation(w string) (Batch, bool) {
	b, ok := s.res[w]
	return b, ok && s.open
}

// Decide closes the open step with the workers whose gradients were applied.
// Their batches are consumed; other participants keep their positions.
// It returns the batches consumed.
func (s *Scheduler) Decide(step int64, included []string) ([]Batch, error) {
	if !s.open {
		return nil, ErrNoStep
	}
	if step != s.step {
		return nil, fmt.Errorf("%w: got %d, open %d", ErrWrongStep, step, s.step)
	}
	for _, w := range included {
		if _, ok := s.res[w]; !ok {
			return nil, fmt.Errorf("%w: %s", ErrNotIncluded, w)
		}
	}
	var done []Batch
	for _, w := range included {
		b := s.res[w]
		if err := s.ledger.Progress(w, b.Unit, b.To); err != nil {
			return nil, err
		}
		s.pos[w] = position{unit: b.Unit, next: b.To}
		done = append(done, b)
	}
	for w := range s.dropped {
		s.ledger.Release(w)
		delete(s.pos, w)
	}
	clear(s.dropped)
	s.open = false
	s.res = nil
	s.step++
	return done, nil
}

// Drop forgets a dead worker: its units go back to the pool at their
// consumed position. If it holds a reservation in the open step, that waits
// for the decision: a gradient it pushed completely before dying may still
// be included, and then its records count as consumed.
func (s *Scheduler) Drop(w string) {
	if _, ok := s.res[w]; ok && s.open {
		s.dropped[w] = true
		return
	}
	s.ledger.Release(w)
	delete(s.pos, w)
}

// Done reports whether the epoch's every record has been consumed.
func (s *Scheduler) Done() bool { return s.ledger.Done() && !s.open }

// AsyncScheduler hands out batches without lockstep (async and bounded
// staleness modes): each worker gets its next batch as soon as it asks, with
// its own step counter (the parameter servers refuse a step a worker already
// pushed, so a retried push is applied at most once). A batch counts as
// consumed when its worker asks for the next one after a successful push (the
// servers answered, so they applied it). A worker that dies after its push
// but before asking again has its last batch handed out again: at most one
// batch per dead worker is seen twice, in async modes only.
//
// With a cut every K batches (CutEvery), the scheduler stops handing out
// new batches after the K-th since the last cut; the batches out are still
// re-issued (a refused push) and taken back (reported, or the worker
// dropped). Once none is out the run is at a cut (AtCut): no gradient is in
// flight, so a checkpoint of every parameter server as it is and of Export
// is consistent. Resume hands out batches again.
type AsyncScheduler struct {
	units  []Unit
	seed   uint64
	batch  int
	ledger *Ledger
	pos    map[string]position
	out    map[string]Batch // the batch each worker holds
	steps  map[string]int64 // each worker's next step number
	orders map[int][]int
	every  int  // new batches between cuts; 0: no cuts
	handed int  // new batches handed out since the last cut
	now    bool // a cut asked for now (CutNow), until Resume
}

// NewAsyncScheduler starts epoch; steps carries the workers' step counters
// over from the previous epoch (nil for none).
func NewAsyncScheduler(units []Unit, seed uint64, epoch, batch int, steps map[string]int64) *AsyncScheduler {
	if steps == nil {
		steps = map[string]int64{}
	}
	return &AsyncScheduler{units: units, seed: seed, batch: batch, ledger: NewLedger(units, seed, epoch),
		pos: map[string]position{}, out: map[string]Batch{}, steps: steps, orders: map[int][]int{}}
}

// Steps returns the workers' step counters, to carry into the next epoch.
func (s *AsyncScheduler) Steps() map[string]int64 { return s.steps }

// CutEvery makes the scheduler pause for a cut after every k new batches
// (0: never). The count starts afresh.
func (s *AsyncScheduler) CutEvery(k int) { s.every, s.handed = max(k, 0), 0 }

// Pausing reports whether the scheduler hands out no new batch until Resume.
func (s *AsyncScheduler) Pausing() bool { return s.now || s.every > 0 && s.handed >= s.every }

// CutNow pauses the scheduler for a cut as soon as the batches out are
// back, whatever the count since the last one (a preemption's checkpoint).
func (s *AsyncScheduler) CutNow() { s.now = true }

// AtCut reports whether the scheduler is paused with no batch out and
// records left in the epoch: the moment to checkpoint mid-epoch. (At the
// epoch's end the epoch's own checkpoint is the cut.)
func (s *AsyncScheduler) AtCut() bool { return s.Pausing() && len(s.out) == 0 && !s.Done() }

// Resume hands out batches again after a cut.
func (s *AsyncScheduler) Resume() { s.handed, s.now = 0, false }

// Next records that worker finished the batch of step done (its push was
// applied; -1 if none) and returns its next batch, or false when the epoch
// has nothing left for it.
func (s *AsyncScheduler) Next(w string, done int64) (Batch, bool, error) {
	if b, ok := s.out[w]; ok && done >= b.Step {
		if err := s.ledger.Progress(w, b.Unit, b.To); err != nil {
			return Batch{}, false, err
		}
		s.pos[w] = position{unit: b.Unit, next: b.To}
		delete(s.out, w)
	}
	if b, ok := s.out[w]; ok {
		// the push failed: the same records again, as a new step
		b.Step = s.steps[w]
		s.steps[w]++
		s.out[w] = b
		return b, true, nil
	}
	if s.Pausing() {
		return Batch{}, false, nil // waiting for a cut
	}
	p, ok := s.pos[w]
	if !ok || p.next >= s.units[p.unit].Len {
		u, from, err := s.ledger.Assign(w)
		if errors.Is(err, ErrEpochEnded) {
			delete(s.pos, w)
			return Batch{}, false, nil
		}
		if err != nil {
			return Batch{}, false, err
		}
		p = position{unit: u.ID, next: from}
		s.pos[w] = p
	}
	u := s.units[p.unit]
	to := min(p.next+s.batch, u.Len)
	o, ok := s.orders[u.ID]
	if !ok {
		o = u.RecordOrder(s.seed, s.ledger.Epoch)
		s.orders[u.ID] = o
	}
	b := Batch{Step: s.steps[w], Epoch: s.ledger.Epoch, Worker: w, Unit: u.ID, From: p.next, To: to}
	for _, i := range o[p.next:to] {
		b.IDs = append(b.IDs, u.RecordID(i))
	}
	s.steps[w]++
	s.out[w] = b
	s.handed++
	return b, true, nil
}

// Holders returns the workers holding a batch not yet reported, sorted.
func (s *AsyncScheduler) Holders() []string {
	ws := make([]string, 0, len(s.out))
	for w := range s.out {
		ws = append(ws, w)
	}
	sort.Strings(ws)
	return ws
}

// Drop forgets a dead worker; its units return to the pool at their
// consumed position.
func (s *AsyncScheduler) Drop(w string) {
	s.ledger.Release(w)
	delete(s.pos, w)
	delete(s.out, w)
}

// Done reports whether every record of the epoch has been consumed.
func (s *AsyncScheduler) Done() bool { return s.ledger.Done() }

// PosState is where a worker is in its unit.
type PosState struct {
	Unit int `json:"unit"`
	Next int `json:"next"`
}

// SchedState is a scheduler's position between steps (sync) or with no
// batch out (async), as a checkpoint holds it.
type SchedState struct {
	Ledger LedgerState         `json:"ledger"`
	Pos    map[string]PosState `json:"pos,omitempty"`
	Step   int64               `json:"step"`            // sync: the next step
	Steps  map[string]int64    `json:"steps,omitempty"` // async: each worker's next step
}

func exportPos(pos map[string]position) map[string]PosState {
	out := make(map[string]PosState, len(pos))
	for w, p := range pos {
		out[w] = PosState{Unit: p.unit, Next: p.next}
	}
	return out
}

func importPos(units []Unit, ps map[string]PosState) (map[string]position, error) {
	pos := make(map[string]position, len(ps))
	for w, p := range ps {
		if p.Unit < 0 || p.Unit >= len(units) || p.Next < 0 || p.Next > units[p.Unit].Len {
			return nil, fmt.Errorf("scheduler: worker %s at unit %d position %d", w, p.Unit, p.Next)
		}
		pos[w] = position{unit: p.Unit, next: p.Next}
	}
	return pos, nil
}

// restorePosition rebuilds the ledger and the workers' places that both
// schedulers keep.
func restorePosition(units []Unit, seed uint64, st SchedState) (*Ledger, map[string]position, error) {
	l, err := RestoreLedger(units, seed, st.Ledger)
	if err != nil {
		return nil, nil, err
	}
	pos, err := importPos(units, st.Pos)
	if err != nil {
		return nil, nil, err
	}
	return l, pos, nil
}

// Export returns the scheduler's position; ErrStepOpen while a step is open.
func (s *Scheduler) Export() (SchedState, error) {
	if s.open {
		return SchedState{}, ErrStepOpen
	}
	return SchedState{Ledger: s.ledger.Export(), Pos: exportPos(s.pos), Step: s.step}, nil
}

// RestoreScheduler rebuilds a sync scheduler at a position Export returned.
func RestoreScheduler(units []Unit, seed uint64, batch int, st SchedState) (*Scheduler, error) {
	l, pos, err := restorePosition(units, seed, st)
	if err != nil {
		return nil, err
	}
	s := NewScheduler(units, seed, st.Ledger.Epoch, batch, st.Step)
	s.ledger, s.pos = l, pos
	return s, nil
}

// Export returns the scheduler's position; an error while a batch is out
// (take it at a cut, or at the epoch's end).
func (s *AsyncScheduler) Export() (SchedState, error) {
	if len(s.out) > 0 {
		return SchedState{}, fmt.Errorf("coordinator: %d batches are out", len(s.out))
	}
	steps := make(map[string]int64, len(s.steps))
	for w, v := range s.steps {
		steps[w] = v
	}
	return SchedState{Ledger: s.ledger.Export(), Pos: exportPos(s.pos), Steps: steps}, nil
}

// RestoreAsyncScheduler rebuilds an async scheduler at a position Export
// returned.
func RestoreAsyncScheduler(units []Unit, seed uint64, batch int, st SchedState) (*AsyncScheduler, error) {
	l, pos, err := restorePosition(units, seed, st)
	if err != nil {
		return nil, err
	}
	s := NewAsyncScheduler(units, seed, st.Ledger.Epoch, batch, st.Steps)
	s.ledger, s.pos = l, pos
	return s, nil
}
