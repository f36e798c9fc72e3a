package coordinator

import (
	"context"
	"fmt"

	"github.com/tailorml/tailor/internal/wire"
)

// The sync epoch loop (docs/cluster.md, "Sync mode: a step is decided in
// one place"): the leader is the step clock. It opens step t for the live
// workers that have work (the participants), waits for Steps to decide it
// and commit to record the decision, and checkpoints every K steps.

// syncEpoch runs steps until every record of the epoch is consumed; it
// returns the next step number.
func (l *leader) syncEpoch(ctx context.Context, a *attempt) (int64, error) {
	l.setPhase(phaseTraining)
	for {
		if err := l.ended(ctx, a); err != nil {
			return 0, err
		}
		if l.cfg.Draining() {
			// a preemption notice: checkpoint after the last decided step,
			// then leave (at the epoch's end, its own checkpoint does)
			if step, done := l.board.syncDone(); done {
				return step, nil
			}
			return 0, l.preempt(ctx, a, l.stepCut)
		}
		if req, ok := l.preempts.pending(); ok {
			// a server told to stop: checkpoint now, and let it go
			if step, done := l.board.syncDone(); !done || step == 0 {
				if err := l.servePreempt(ctx, a, req, l.stepCut); err != nil {
					return 0, err
				}
				continue
			}
		}
		s, err := l.beginStep()
		switch {
		case err != nil:
			return 0, err
		case s.done:
			return s.step, nil
		case !s.open:
			// no live worker, or the records left are held by workers
			// that are not live: wait for the membership to change
			if err := l.await(ctx, a, s.wake); err != nil {
				return 0, err
			}
			continue
		}
		l.stepsGauge.Set(float64(s.step))
		if err := l.waitDecided(ctx, a, s.step); err != nil {
			return 0, err
		}
		if k := int64(l.spec.CheckpointEvery); k > 0 && (s.step+1)%k == 0 {
			l.setPhase(phaseCheckpoint)
			err := l.stepCheckpoint(ctx, a)
			l.setPhase(phaseTraining)
			if err != nil {
				return 0, err
			}
		}
	}
}

// stepStart is what beginStep did: opened step, found the epoch done
// (step is the next one), or neither, until wake is closed.
type stepStart struct {
	step       int64
	open, done bool
	wake       <-chan struct{}
}

// beginStep opens the next step for the live workers that have work: they
// are its participants.
func (l *leader) beginStep() (stepStart, error) {
	b := l.board
	wake := b.wakeCh() // before looking at the membership: no change is missed
	live := l.liveWorkers()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sched.Done() {
		return stepStart{step: b.sched.Step(), done: true}, nil
	}
	if len(live) == 0 {
		return stepStart{wake: wake}, nil
	}
	res, err := b.sched.Begin(live)
	if err != nil {
		return stepStart{}, err
	}
	if len(res) == 0 {
		// records are left, but held by workers that are not live: the
		// membership drops them
		return stepStart{wake: wake}, nil
	}
	step := b.sched.Step()
	ids := make([]string, len(res))
	for i, bt := range res {
		ids[i] = bt.Worker
	}
	if err := l.steps.SetParticipants(step, ids); err != nil {
		return stepStart{}, err
	}
	b.broadcastLocked()
	return stepStart{step: step, open: true}, nil
}

// waitDecided waits for commit to record the decision of step.
func (l *leader) waitDecided(ctx context.Context, a *attempt, step int64) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.lost:
			return errLostLeadership
		case <-a.rollback:
			return errRollback
		case s := <-l.decided:
			if s == step {
				return nil
			}
		}
	}
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

// stepCheckpoint checkpoints a sync run between two steps.
func (l *leader) stepCheckpoint(ctx context.Context, a *attempt) error {
	return l.stepCut(ctx, a, "steps")
}

// stepCut checkpoints a sync run between two steps, for reason; a failure
// is logged (saveOrWarn).
func (l *leader) stepCut(ctx context.Context, a *attempt, reason string) error {
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
	return l.ck.saveOrWarn(ctx, a.ps, cut{version: rs.Step, state: rs, epochs: rs.Epoch, reason: reason})
}
