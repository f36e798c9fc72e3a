package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/wire"
)

// Sync-step decisions (docs/cluster.md, "Sync mode: a step is decided in
// one place"). Every parameter server reports, for step t, the workers
// whose step-t gradient it holds completely; Steps decides S_t, the
// workers whose gradients make the step, once, and every server applies
// exactly S_t:
//
//   - S_t = the step's participants (in rank order) once every server
//     holds all of them. A participant that leaves is dropped (Drop), so
//     the decision never waits for a dead worker. S_t never holds anyone
//     but participants: a worker dropped before the decision is out, even
//     if every server holds its gradient.
//   - With a quorum k: S_t = the first k participants complete on every
//     server; when a report completes more than k at once, the lowest
//     ranks. The others are late.
//   - Deadline after a step's first report, S_t = the participants
//     complete on every server by then, possibly none: an empty step
//     changes no weight, and every server moves on to the next version.
//
// A decision is final: Commit records it (the ledger's etcd Txn) before
// any server sees it, and a server asking again gets the same answer.

// Defaults of StepsConfig.
const (
	DefaultStepDeadline  = 2 * time.Minute
	DefaultKeepDecisions = 512
)

// maxOpenSteps bounds the undecided steps Steps tracks: in a healthy run
// there is one.
const maxOpenSteps = 16

// Errors of Steps.
var (
	ErrStepsConfig = errors.New("coordinator: bad steps config")
	// ErrBadReport means a report or a participant list is malformed: a
	// server index out of range, a negative step, worker ids unsorted,
	// repeated or empty, or too many undecided steps.
	ErrBadReport = errors.New("coordinator: bad step report")
	// ErrForgotten means a step's decision is older than those kept, or
	// the step was passed without being decided here.
	ErrForgotten = errors.New("coordinator: step decision no longer kept")
	// ErrStepsClosed means Steps has been closed.
	ErrStepsClosed = errors.New("coordinator: steps closed")
	// ErrStepsReset means the run was rolled back while the step was open.
	ErrStepsReset = errors.New("coordinator: steps reset (the run was rolled back)")
	// ErrDecisionConflict means Load was given a decision that differs
	// from the one already known for its step.
	ErrDecisionConflict = errors.New("coordinator: conflicting decisions of a step")
)

// CommitFunc records a decision before any server sees it (the ledger: S_t
// and the included workers' unit positions, in one etcd Txn). It returns
// the decision recorded for d.Step: d, or one recorded earlier (a retry
// after an ambiguous failure, a previous leader), which Steps then
// publishes instead. On error nothing is published; Steps retries, with
// the set as it is then, after a backoff. It must record at most one
// decision per step (e.g. an etcd Create of the step's key).
type CommitFunc func(ctx context.Context, d wire.Decision) (wire.Decision, error)

// StepsConfig configures Steps.
type StepsConfig struct {
	// RunID names the run; reports of other runs are refused.
	RunID string
	// Servers is the number of parameter servers (P): a worker is
	// complete once all P have reported it.
	Servers int
	// Quorum, if > 0, decides a step at the first Quorum participants
	// complete on every server ("backup workers"); 0 waits for all.
	Quorum int
	// Deadline bounds a step from its first report: then it is decided
	// with the participants complete on every server. 0 means
	// DefaultStepDeadline.
	Deadline time.Duration
	// Keep is how many decisions are remembered; 0 means
	// DefaultKeepDecisions.
	Keep int
	// Commit, if set, records each decision before it is published.
	Commit CommitFunc
	// Log receives decisions (debug), steps decided without someone
	// (info) and commit failures (warn); nil discards.
	Log *slog.Logger
}

// Validate reports every problem of the configuration.
func (c *StepsConfig) Validate() error {
	var errs []error
	if c.RunID == "" || len(c.RunID) > wire.MaxStringBytes {
		errs = append(errs, fmt.Errorf("run id %q: want 1..%d bytes", c.RunID, wire.MaxStringBytes))
	}
	if c.Servers < 1 {
		errs = append(errs, fmt.Errorf("servers %d: want ≥ 1", c.Servers))
	}
	if c.Quorum < 0 {
		errs = append(errs, fmt.Errorf("quorum %d: want ≥ 0", c.Quorum))
	}
	if c.Deadline < 0 || c.Keep < 0 {
		errs = append(errs, fmt.Errorf("deadline %v, keep %d: want ≥ 0", c.Deadline, c.Keep))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrStepsConfig, errors.Join(errs...))
	}
	return nil
}

// Steps decides sync steps for all parameter servers of a run, and
// answers them over gRPC (it implements wire.StepsHandler). It is safe
// for concurrent use.
type Steps struct {
	cfg       StepsConfig
	log       *slog.Logger
	quit      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // commits in flight

	mu      sync.Mutex
	closed  bool
	parts   []participants // ascending by from
	open    map[int64]*openStep
	decided map[int64]wire.Decision
	kept    []int64 // decided steps, ascending
	floor   int64   // an undecided step below floor is forgotten
}

var _ wire.StepsHandler = (*Steps)(nil)

// participants are the workers expected to push from step from on, in
// rank order.
type participants struct {
	from int64
	ids  []string
}

// NewSteps returns an engine with no participants: until SetParticipants,
// nothing is decided.
func NewSteps(cfg StepsConfig) (*Steps, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = DefaultStepDeadline
	}
	if cfg.Keep == 0 {
		cfg.Keep = DefaultKeepDecisions
	}
	lg := cfg.Log
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Steps{
		cfg:     cfg,
		log:     lg.With("run", cfg.RunID),
		quit:    make(chan struct{}),
		open:    map[int64]*openStep{},
		decided: map[int64]wire.Decision{},
	}, nil
}

// Close fails every waiting report with ErrStepsClosed and waits for
// commits in flight (their context is cancelled).
func (s *Steps) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.quit)
		for _, st := range s.open {
			st.stopTimers()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// Reset forgets every step, open or decided, and every participant set:
// the run was rolled back to a checkpoint and numbers its steps from there
// again. Reports waiting on an open step get ErrStepsReset. It returns once
// no commit of the old steps is in flight.
func (s *Steps) Reset() {
	s.mu.Lock()
	for t, st := range s.open {
		st.stopTimers()
		st.err = fmt.Errorf("%w: step %d", ErrStepsReset, t)
		close(st.done)
		delete(s.open, t)
	}
	clear(s.decided)
	s.kept, s.parts, s.floor = nil, nil, 0
	s.mu.Unlock()
	s.wg.Wait()
	s.log.Info("sync steps reset")
}

// SetParticipants sets the workers expected to push step from and every
// later step (until the next SetParticipants), in rank order: the order of
// quorum choice and of summation. Undecided steps ≥ from take them at
// once; a participant they lose counts as dropped.
func (s *Steps) SetParticipants(from int64, ids []string) error {
	if from < 0 {
		return fmt.Errorf("%w: participants from step %d", ErrBadReport, from)
	}
	seen := make(map[string]bool, len(ids))
	for _, w := range ids {
		if w == "" || len(w) > wire.MaxStringBytes || seen[w] {
			return fmt.Errorf("%w: participant %q empty, too long or repeated", ErrBadReport, w)
		}
		seen[w] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.open {
		if st.step >= from {
			for _, w := range s.participantsLocked(st.step) {
				if !seen[w] {
					st.dropped[w] = true
				}
			}
		}
	}
	s.parts = slices.DeleteFunc(s.parts, func(p participants) bool { return p.from >= from })
	s.parts = append(s.parts, participants{from: from, ids: slices.Clone(ids)})
	s.evaluateAllLocked()
	return nil
}

// Drop removes a worker from the participants of every undecided and
// later step: it left the membership. The decision no longer waits for it
// and does not include it.
func (s *Steps) Drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.open {
		if slices.Contains(s.participantsLocked(st.step), id) {
			st.dropped[id] = true
		}
	}
	for i := range s.parts {
		s.parts[i].ids = slices.DeleteFunc(slices.Clone(s.parts[i].ids), func(w string) bool { return w == id })
	}
	s.log.Debug("participant dropped", "worker", id)
	s.evaluateAllLocked()
}

// Participants returns the participants of step, in rank order.
func (s *Steps) Participants(step int64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.participantsLocked(step))
}

func (s *Steps) participantsLocked(step int64) []string {
	for i := len(s.parts) - 1; i >= 0; i-- {
		if s.parts[i].from <= step {
			return s.parts[i].ids
		}
	}
	return nil
}

// Decision returns the decision of step, if it is made and still kept.
func (s *Steps) Decision(step int64) (wire.Decision, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.decided[step]
	return d, ok
}

// StepState is what Steps knows of a step.
type StepState struct {
	Decided bool
	// Complete are the workers every server has reported complete, sorted
	// (for an undecided step).
	Complete []string
	// Waiting are the participants not yet complete on every server, in
	// rank order (for an undecided step): whom the decision waits for.
	Waiting []string
	// Missing holds, by server index, the participants that server has
	// not reported complete, in rank order (for an undecided step; before
	// any report, every participant on every server): where the
	// gradients the decision waits for are missing.
	Missing [][]string
}

// State reports what Steps knows of step: for logs, status pages and
// tests.
func (s *Steps) State(step int64) StepState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.decided[step]; ok {
		return StepState{Decided: true}
	}
	ps := s.participantsLocked(step)
	out := StepState{Missing: make([][]string, s.cfg.Servers)}
	st := s.open[step]
	if st == nil {
		out.Waiting = slices.Clone(ps)
		for i := range out.Missing {
			out.Missing[i] = slices.Clone(ps)
		}
		return out
	}
	for i, has := range st.has {
		for _, w := range ps {
			if !has[w] {
				out.Missing[i] = append(out.Missing[i], w)
			}
		}
	}
	for w := range st.has[0] {
		if st.completeEverywhere(w) {
			out.Complete = append(out.Complete, w)
		}
	}
	slices.Sort(out.Complete)
	for _, w := range ps {
		if !st.completeEverywhere(w) {
			out.Waiting = append(out.Waiting, w)
		}
	}
	return out
}

// Load makes Steps remember decisions recorded earlier (a new leader
// reading the ledger), so that servers asking for those steps get them.
// A decision that differs from one already known is ErrDecisionConflict.
func (s *Steps) Load(ds ...wire.Decision) error {
	for _, d := range ds {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrBadReport, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range ds {
		if old, ok := s.decided[d.Step]; ok {
			if !sameDecision(old, d) {
				return fmt.Errorf("%w: step %d: %v and %v", ErrDecisionConflict, d.Step, old, d)
			}
			continue
		}
		st := s.open[d.Step]
		if st == nil {
			st = s.newStepLocked(d.Step)
		}
		st.stopTimers()
		s.publishLocked(st, d)
	}
	return nil
}

// Report records that server holds the complete step gradients of the
// workers in complete (sorted, no repeats) and waits until the step is
// decided, or ctx ends. Reports only add: a server's complete set is the
// union of its reports.
func (s *Steps) Report(ctx context.Context, server int, step int64, complete []string) (wire.Decision, error) {
	switch {
	case server < 0 || server >= s.cfg.Servers:
		return wire.Decision{}, fmt.Errorf("%w: server %d of %d", ErrBadReport, server, s.cfg.Servers)
	case step < 0:
		return wire.Decision{}, fmt.Errorf("%w: step %d", ErrBadReport, step)
	}
	req := wire.DecideRequest{RunID: s.cfg.RunID, Server: server, Step: step, Complete: complete}
	if err := req.Validate(); err != nil {
		return wire.Decision{}, fmt.Errorf("%w: %w", ErrBadReport, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return wire.Decision{}, ErrStepsClosed
	}
	if d, ok := s.decided[step]; ok {
		s.mu.Unlock()
		return d, nil
	}
	if step < s.floor {
		s.mu.Unlock()
		return wire.Decision{}, fmt.Errorf("%w: step %d (kept from %d)", ErrForgotten, step, s.floor)
	}
	st := s.open[step]
	if st == nil {
		if len(s.open) >= maxOpenSteps {
			s.mu.Unlock()
			return wire.Decision{}, fmt.Errorf("%w: %d steps undecided, refusing step %d", ErrBadReport, len(s.open), step)
		}
		st = s.newStepLocked(step)
	}
	for _, w := range complete {
		st.has[server][w] = true
	}
	s.evaluateLocked(st)
	done := st.done
	s.mu.Unlock()
	select {
	case <-done:
		return st.d, st.err
	case <-ctx.Done():
		return wire.Decision{}, ctx.Err()
	case <-s.quit:
		return wire.Decision{}, ErrStepsClosed
	}
}

// Decide implements wire.StepsHandler: a parameter server's report and
// long-poll for the decision.
func (s *Steps) Decide(ctx context.Context, req *wire.DecideRequest) (*wire.DecideReply, error) {
	if req.RunID != s.cfg.RunID {
		s.log.Warn("decide request refused", "reason", wire.ReasonRunID, "run", req.RunID)
		return nil, wire.RejectStatus(wire.ReasonRunID, fmt.Sprintf("run %q", req.RunID))
	}
	if req.Server < 0 || req.Server >= s.cfg.Servers {
		s.log.Warn("decide request refused", "reason", wire.ReasonPlan, "server", req.Server)
		return nil, wire.RejectStatus(wire.ReasonPlan, fmt.Sprintf("server %d; the run has %d", req.Server, s.cfg.Servers))
	}
	d, err := s.Report(ctx, req.Server, req.Step, req.Complete)
	switch {
	case err == nil:
		return &wire.DecideReply{RunID: s.cfg.RunID, Server: req.Server, Decision: d}, nil
	case errors.Is(err, ErrBadReport):
		s.log.Warn("decide request refused", "reason", wire.ReasonShape, "server", req.Server, "err", err)
		return nil, wire.RejectStatus(wire.ReasonShape, err.Error())
	case errors.Is(err, ErrForgotten):
		return nil, wire.RejectStatus(wire.ReasonStale, err.Error())
	case errors.Is(err, ErrStepsClosed):
		return nil, wire.RejectStatus(wire.ReasonClosed, "")
	case ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return nil, err
}
