package paramserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"

	"github.com/tailorml/tailor/internal/retry"
	"github.com/tailorml/tailor/internal/wire"
)

// Decider decides which workers' gradients make a sync step, in one place
// for all P servers (docs/cluster.md, "Sync mode: a step is decided in one
// place"). In the cluster it is the coordinator, reached with
// wire.NewDeciderClient.
type Decider interface {
	// Decide reports that this server holds, for step, the complete
	// gradients of the workers in complete (sorted ids, never empty), and
	// waits until the step is decided or ctx ends. The decision of a step
	// is final: asked again, with any complete set, the decider answers
	// the same. It must never include a worker that some server has not
	// reported complete.
	Decide(ctx context.Context, step int64, complete []string) (wire.Decision, error)
}

// ErrDecision means a sync-step decision could not be applied: it named a
// gradient this server does not hold (or was malformed). The server stops
// applying sync steps rather than diverge from the other servers; see
// Server.Err.
var ErrDecision = errors.New("paramserver: sync-step decision cannot be applied")

// keepDecisions is how many applied decisions a server remembers to answer
// retried pushes.
const keepDecisions = 16

// reasonIncluded is checkPushLocked's answer to a retried push whose
// gradient made its (applied) step; never sent on the wire.
const reasonIncluded = "\x00included"

// replayLocked answers a push of a step already applied, from the recent
// decisions: reasonIncluded if the worker's gradient made it, ReasonLate
// if not; "" if the decision is not remembered.
func (s *Server) replayLocked(h *pushHeader) (reason, detail string) {
	if !s.decided() {
		return "", ""
	}
	for _, d := range s.recent {
		if d.Step == h.step {
			if d.Includes(h.worker) {
				return reasonIncluded, ""
			}
			return wire.ReasonLate, fmt.Sprintf("step %d was decided without it", h.step)
		}
	}
	return "", ""
}

// replayIncluded answers a retried push whose gradient made its step: the
// push is not applied again, and not counted again.
func (s *Server) replayIncluded(st grpc.ServerStream, h *pushHeader) error {
	s.mu.Lock()
	v := s.version
	s.mu.Unlock()
	s.log.Debug("retried push of an applied step: it was included", "worker", h.worker, "step", h.step)
	return st.SendMsg(&wire.PushReply{RunID: s.cfg.RunID, WorkerID: h.worker, Server: s.cfg.Index, Step: h.step, Version: v, Accepted: true})
}

// pushOutcome is what a push held for a decided step learns.
type pushOutcome struct {
	version        int64
	reason, detail string // empty: included
}

// Err reports why the server has stopped applying sync steps (an
// ErrDecision), or nil. Such a server refuses pushes with
// wire.ReasonInconsistent; its weights stay at the last good version
// until Restore (or SetWeights) sets consistent ones.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// kickDecider wakes the decide loop: the complete set or the membership
// changed.
func (s *Server) kickDecider() {
	select {
	case s.decideKick <- struct{}{}:
	default:
	}
}

// decideLoop reports the complete set of the step being collected to the
// Decider whenever it grows (or the membership changes) and applies the
// decision. One call is in flight at a time: a change cancels the call and
// a new one reports the larger set. A run of failed calls is logged at its
// first failure and at its end.
func (s *Server) decideLoop() {
	defer close(s.decideDone)
	backoff := retry.Backoff{Base: 80 * time.Millisecond, Max: 1600 * time.Millisecond, Jitter: 0.5} // 100 ms doubling to 2 s, ±20%
	fails := &retry.Streak{Log: s.log, What: "asking for a sync-step decision"}
	for {
		s.mu.Lock()
		ready := !s.closed && s.failed == nil && len(s.pending) > 0
		var step int64
		var complete []string
		if ready {
			step = s.version
			complete = make([]string, 0, len(s.pending))
			for w := range s.pending {
				complete = append(complete, w)
			}
			slices.Sort(complete)
		}
		s.mu.Unlock()
		if !ready {
			select {
			case <-s.decideKick:
				continue
			case <-s.done:
				return
			}
		}
		d, err, kicked := s.decideOnce(step, complete)
		select {
		case <-s.done:
			return
		default:
		}
		if err == nil {
			backoff.Reset()
			fails.OK("step", step)
			s.applyDecision(step, d)
			continue
		}
		if kicked {
			continue // superseded by a larger set or a membership change
		}
		s.m.decideFailures.Add(1)
		if errors.Is(err, context.DeadlineExceeded) {
			s.log.Warn("sync step still undecided", "step", step, "complete", len(complete), "waited", s.cfg.StepDeadline)
			continue
		}
		fails.Fail(err, "step", step)
		wait := time.NewTimer(backoff.Next())
		select {
		case <-wait.C:
		case <-s.decideKick:
		case <-s.done:
			wait.Stop()
			return
		}
		wait.Stop()
	}
}

// decideOnce makes one Decide call, bounded by StepDeadline, cancelled by
// a kick (kicked) or Close. It returns after the call has ended, so calls
// never overlap.
func (s *Server) decideOnce(step int64, complete []string) (d wire.Decision, err error, kicked bool) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StepDeadline)
	defer cancel()
	type result struct {
		d   wire.Decision
		err error
	}
	res := make(chan result, 1)
	go func() {
		d, err := s.cfg.Decider.Decide(ctx, step, complete)
		res <- result{d, err}
	}()
	var r result
	select {
	case r = <-res:
		if r.err != nil && ctx.Err() == context.DeadlineExceeded {
			r.err = fmt.Errorf("%w: %w", context.DeadlineExceeded, r.err)
		}
	case <-s.decideKick:
		cancel()
		r, kicked = <-res, true
	case <-s.done:
		cancel()
		r = <-res
		r.err = ErrClosed
	}
	return r.d, r.err, kicked
}

// applyDecision applies the decision of step, if the server is still
// collecting step; a decision it cannot apply stops sync (ErrDecision).
func (s *Server) applyDecision(step int64, d wire.Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.failed != nil {
		return
	}
	if s.version != step || !s.initialised {
		// Restore or SetWeights moved the server meanwhile.
		s.log.Info("decision for a step no longer collected", "step", step, "version", s.version)
		return
	}
	if err := s.checkDecisionLocked(step, d); err != nil {
		held := make([]string, 0, len(s.pending))
		for w := range s.pending {
			held = append(held, w)
		}
		slices.Sort(held)
		s.failed = fmt.Errorf("%w: step %d: %w", ErrDecision, step, err)
		s.m.decisionErrors.Add(1)
		s.log.Error("sync-step decision cannot be applied: sync stopped, weights stay at the last good version",
			"step", step, "err", err, "included", d.Included, "held", held)
		s.answerWaitsLocked(pushOutcome{version: s.version, reason: wire.ReasonInconsistent, detail: err.Error()})
		return
	}
	s.completeDecidedLocked(d)
}

// checkDecisionLocked checks that d decides step and names only gradients
// this server holds.
func (s *Server) checkDecisionLocked(step int64, d wire.Decision) error {
	if d.Step != step {
		return fmt.Errorf("decision is of step %d", d.Step)
	}
	if err := d.Validate(); err != nil {
		return err
	}
	var missing []string
	for _, w := range d.Included {
		if s.pending[w] == nil {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("decision includes workers whose gradient this server does not hold: %q", missing)
	}
	return nil
}

// completeDecidedLocked applies exactly the decided gradients, summed in
// the decision's order; held gradients outside it are dropped, and their
// pushes answered ReasonLate.
func (s *Server) completeDecidedLocked(d wire.Decision) {
	step := s.version
	late := 0
	for w := range s.pending {
		if !d.Includes(w) {
			late++
		}
	}
	s.applyPendingLocked(d.Included)
	for w, ch := range s.waits {
		if d.Includes(w) {
			ch <- pushOutcome{version: s.version}
		} else {
			ch <- pushOutcome{version: s.version, reason: wire.ReasonLate, detail: fmt.Sprintf("step %d was decided without it", step)}
		}
	}
	clear(s.waits)
	if len(s.recent) == keepDecisions {
		s.recent = slices.Delete(s.recent, 0, 1)
	}
	s.recent = append(s.recent, d)
	s.m.syncSteps.WithLabelValues(endDecided).Inc()
	if n := len(d.Excluded); n > 0 {
		s.m.missing.Add(uint64(n))
		s.m.missingByEnd.WithLabelValues(endDecided).Add(float64(n))
		s.log.Info("sync step decided without some workers", "step", step, "gradients", len(d.Included), "excluded", d.Excluded, "held_late", late)
	}
	s.weightsChangedLocked()
}

// answerWaitsLocked answers every push waiting for a decision.
func (s *Server) answerWaitsLocked(o pushOutcome) {
	for w, ch := range s.waits {
		ch <- o
		delete(s.waits, w)
	}
}
