package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

// The sync epoch loop (docs/cluster.md, "Sync mode: a step is decided in
// one place"): the leader is the step clock. It opens step t for the live
// workers that have work (the participants), waits for Steps to decide it
// and commit to record the decision, and checkpoints every K steps.

// syncEpoch runs steps until every record of the epoch is consumed; it returns
// the next step number.
func (l *leader) syncEpoch(ctx context.Context, a *attempt) (int64, error) {
	l.setPhase(phaseTraining)
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		select {
		case <-l.term.Done():
			return 0, errLostLeadership
		case <-a.rollback:
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
		if err := l.waitDecided(ctx, a, step); err != nil {
			return 0, err
		}
		if k := int64(l.spec.CheckpointEvery); k > 0 && (step+1)%k == 0 {
			l.setPhase(phaseCheckpoint)
			err := l.stepCheckpoint(ctx, a)
			l.setPhase(phaseTraining)
			if err != nil {
				return 0, err
			}
		}
	}
}

// waitDecided waits for commit to record the decision of step.
func (l *leader) waitDecided(ctx context.Context, a *attempt, step int64) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.term.Done():
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
	return l.ck.saveOrWarn(ctx, a.ps, cut{version: rs.Step, state: rs, epochs: rs.Epoch, reason: "steps"})
}
