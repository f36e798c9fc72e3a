package coordinator

import (
	"context"
)

// The async and SSP epoch loop: the Work service hands out batches as
// workers ask (AsyncScheduler); the loop waits for the epoch to be consumed
// and checkpoints at every cut.

// asyncEpoch waits until the Next calls have consumed every record of the
// epoch, checkpointing at every cut (spec.CheckpointEvery batches); it
// returns the workers' step counters.
func (l *leader) asyncEpoch(ctx context.Context, a *attempt) (map[string]int64, error) {
	l.setPhase(phaseTraining)
	b := l.board
	for {
		b.mu.Lock()
		if b.asched.Done() {
			steps := b.asched.Steps()
			b.asched = nil // workers wait while the epoch is judged
			b.mu.Unlock()
			return steps, nil
		}
		req, requested := l.preempts.pending()
		if (l.cfg.Draining() || requested) && !b.asched.Pausing() {
			// a preemption notice, this leader's or a server's: no new
			// batch; checkpoint once the batches out are back
			b.asched.CutNow()
		}
		if b.asched.AtCut() {
			b.mu.Unlock()
			if l.cfg.Draining() {
				return nil, l.preempt(ctx, a, l.asyncCut)
			}
			if requested {
				err := l.servePreempt(ctx, a, req, l.asyncCut)
				b.mu.Lock()
				if b.asched != nil {
					b.asched.Resume()
				}
				b.broadcastLocked()
				b.mu.Unlock()
				if err != nil {
					return nil, err
				}
				continue
			}
			l.setPhase(phaseCheckpoint)
			err := l.asyncCheckpoint(ctx, a)
			l.setPhase(phaseTraining)
			if err != nil {
				return nil, err
			}
			continue
		}
		wake := b.wake
		b.mu.Unlock()
		if err := l.await(ctx, a, wake); err != nil {
			return nil, err
		}
	}
}

// asyncCheckpoint checkpoints an async or SSP run at a cut: no batch is
// out, so no gradient is in flight and every server saves its part as it
// is (version -1), as at an epoch's end; the run state holds the
// scheduler's position, so a resume goes on mid-epoch. Then batches are
// handed out again.
func (l *leader) asyncCheckpoint(ctx context.Context, a *attempt) error {
	err := l.asyncCut(ctx, a, "steps")
	b := l.board
	b.mu.Lock()
	if b.asched != nil {
		b.asched.Resume()
	}
	b.broadcastLocked()
	b.mu.Unlock()
	return err
}

// asyncCut checkpoints an async or SSP run at a cut, leaving the scheduler
// paused.
func (l *leader) asyncCut(ctx context.Context, a *attempt, reason string) error {
	b := l.board
	b.mu.Lock()
	st, err := b.asched.Export()
	rs := b.runStateLocked(&st)
	rs.AsyncSteps = st.Steps
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return l.ck.saveOrWarn(ctx, a.ps, cut{version: -1, state: rs, epochs: rs.Epoch, reason: reason})
}
