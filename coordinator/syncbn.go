package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/wire"
)

// Synchronised BatchNorm (docs/cluster.md, "BatchNorm"): in a sync step
// every participant sends, for each slot (a BatchNorm layer's forward or
// backward pass), its per-channel sums, and every one of them gets the
// same total over the step's participants, summed in rank order. A
// participant dropped from the step (it left the membership) is not
// waited for: the slots it had not reached total the others.

// bnParticipants returns the participants of a step, in rank order.
type bnParticipants func(step int64) []string

// bnReducer answers the workers' ReduceBN calls.
type bnReducer struct {
	runID string
	parts bnParticipants
	gen   func() uint64
	log   *slog.Logger
	// deadline bounds the wait for a slot's last participant; those
	// still missing then are left out of the step, and onTimeout learns
	// who they were (outside the lock).
	deadline  time.Duration
	onTimeout func(step int64, missing []string)

	mu       sync.Mutex
	steps    map[int64]map[int]*bnSlot // open slots by step and slot
	excluded map[int64]map[string]bool // participants left out of a step at a slot's deadline
	floor    int64                     // slots of earlier steps are refused
	closed   bool
}

// bnSlot is one slot of one step.
type bnSlot struct {
	timer   *time.Timer
	vals    map[string][]float64
	done    chan struct{}
	total   []float64
	workers int
	err     error
}

// errBNStale refuses a contribution to a step that is over or of another
// generation: the worker's step fails and it asks for work again.
var errBNStale = errors.New("stale step")

func newBNReducer(runID string, parts bnParticipants, gen func() uint64, deadline time.Duration, onTimeout func(int64, []string), log *slog.Logger) *bnReducer {
	return &bnReducer{runID: runID, parts: parts, gen: gen, deadline: deadline, onTimeout: onTimeout, log: log,
		steps: map[int64]map[int]*bnSlot{}, excluded: map[int64]map[string]bool{}}
}

// partsLocked are the participants of step not left out of it.
func (r *bnReducer) partsLocked(step int64) []string {
	ps := r.parts(step)
	if ex := r.excluded[step]; len(ex) > 0 {
		ps = slices.DeleteFunc(slices.Clone(ps), func(w string) bool { return ex[w] })
	}
	return ps
}

// Reduce is the leader's wire.WorkHandler ReduceBN.
func (r *bnReducer) Reduce(ctx context.Context, req *wire.BNRequest) (*wire.BNReply, error) {
	if req.RunID != r.runID {
		return nil, wire.RejectStatus(wire.ReasonRunID, req.RunID)
	}
	s, err := r.contribute(req)
	if err != nil {
		return nil, err
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if s.err != nil {
		return nil, s.err
	}
	return &wire.BNReply{RunID: req.RunID, WorkerID: req.WorkerID, Step: req.Step, Slot: req.Slot, Values: s.total, Workers: s.workers}, nil
}

// contribute records req's values and returns its slot.
func (r *bnReducer) contribute(req *wire.BNRequest) (*bnSlot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return nil, status.Error(codes.Unavailable, "coordinator: batchnorm closed")
	case req.Gen != r.gen() || req.Step < r.floor:
		return nil, status.Errorf(codes.FailedPrecondition, "coordinator: batchnorm: %v: step %d (generation %x)", errBNStale, req.Step, req.Gen)
	case !slices.Contains(r.partsLocked(req.Step), req.WorkerID):
		return nil, status.Errorf(codes.FailedPrecondition, "coordinator: batchnorm: %q is no participant of step %d", req.WorkerID, req.Step)
	}
	slots := r.steps[req.Step]
	if slots == nil {
		slots = map[int]*bnSlot{}
		r.steps[req.Step] = slots
	}
	s := slots[req.Slot]
	if s == nil {
		s = &bnSlot{vals: map[string][]float64{}, done: make(chan struct{})}
		slots[req.Slot] = s
		if r.deadline > 0 {
			step, slot := req.Step, req.Slot
			s.timer = time.AfterFunc(r.deadline, func() { r.timeout(step, slot, s) })
		}
	}
	if s.total != nil || s.err != nil {
		return s, nil // a retry of a decided slot gets the same answer
	}
	for w, v := range s.vals {
		if len(v) != len(req.Values) {
			return nil, status.Errorf(codes.InvalidArgument, "coordinator: batchnorm: step %d slot %d: %d values from %q, %d from %q",
				req.Step, req.Slot, len(req.Values), req.WorkerID, len(v), w)
		}
	}
	s.vals[req.WorkerID] = slices.Clone(req.Values)
	r.evaluateLocked(req.Step, s)
	return s, nil
}

// evaluateLocked totals s once every participant of step has contributed.
func (r *bnReducer) evaluateLocked(step int64, s *bnSlot) {
	if s.total != nil || s.err != nil {
		return
	}
	ps := r.partsLocked(step)
	var from []string
	for _, w := range ps {
		if _, ok := s.vals[w]; !ok {
			return
		}
		from = append(from, w)
	}
	if len(from) == 0 {
		return
	}
	total := make([]float64, len(s.vals[from[0]]))
	for _, w := range from {
		for i, v := range s.vals[w] {
			total[i] += v
		}
	}
	s.total, s.workers, s.vals = total, len(from), nil
	if s.timer != nil {
		s.timer.Stop()
	}
	close(s.done)
}

// timeout leaves the participants still missing from slot s of step out
// of the step, so that the others go on: a worker that is a member but
// does not compute (hung, or unable to reach this coordinator) must not
// hold the run.
func (r *bnReducer) timeout(step int64, slot int, s *bnSlot) {
	r.mu.Lock()
	if r.closed || s.total != nil || s.err != nil || r.steps[step][slot] != s {
		r.mu.Unlock()
		return
	}
	var missing []string
	for _, w := range r.partsLocked(step) {
		if _, ok := s.vals[w]; !ok {
			missing = append(missing, w)
		}
	}
	ex := r.excluded[step]
	if ex == nil {
		ex = map[string]bool{}
		r.excluded[step] = ex
	}
	for _, w := range missing {
		ex[w] = true
	}
	for _, other := range r.steps[step] {
		r.evaluateLocked(step, other)
	}
	r.mu.Unlock()
	r.log.Warn("synchronised batchnorm: workers missing at the deadline are left out of the step", "step", step, "slot", slot,
		"missing", missing, "deadline", r.deadline)
	if r.onTimeout != nil && len(missing) > 0 {
		r.onTimeout(step, missing)
	}
}

// Reevaluate totals the open slots whose missing participants were
// dropped.
func (r *bnReducer) Reevaluate() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for step, slots := range r.steps {
		for _, s := range slots {
			r.evaluateLocked(step, s)
		}
	}
}

// Finished forgets the slots of steps up to step (decided: their
// participants have pushed, so they are past every slot).
func (r *bnReducer) Finished(step int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.floor = max(r.floor, step+1)
	for t, slots := range r.steps {
		if t <= step {
			r.failLocked(slots, fmt.Errorf("step %d is over", t))
			delete(r.steps, t)
		}
	}
	for t := range r.excluded {
		if t <= step {
			delete(r.excluded, t)
		}
	}
}

// Reset fails every open slot (a rollback or a new leader generation): the
// workers waiting in them fail their step and ask for work again.
func (r *bnReducer) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for t, slots := range r.steps {
		r.failLocked(slots, errors.New("the run was rolled back"))
		delete(r.steps, t)
	}
	clear(r.excluded)
	r.floor = 0
}

// Close fails every open slot and refuses new ones.
func (r *bnReducer) Close() {
	r.Reset()
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

func (r *bnReducer) failLocked(slots map[int]*bnSlot, why error) {
	for _, s := range slots {
		if s.timer != nil {
			s.timer.Stop()
		}
		if s.total == nil && s.err == nil {
			s.err = status.Errorf(codes.FailedPrecondition, "coordinator: batchnorm: %v: %v", errBNStale, why)
			close(s.done)
		}
	}
}
