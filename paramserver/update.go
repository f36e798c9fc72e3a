package paramserver

import (
	"context"
	"github.com/tailorml/tailor/internal/job"
	"slices"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

// This file holds the update rules: how an accepted push is applied in
// each mode (async at once, SSP within the staleness bound, sync once the
// step is complete), the optimizer step, the average of a sync step, and
// the initial weights.

// accept applies a complete, valid push according to the mode. kept
// reports whether the server kept buf (sync: until the step is applied).
// With a Decider, wait delivers the push's outcome once the step is
// decided.
func (s *Server) accept(ctx context.Context, h *pushHeader, buf []float32) (version int64, reason, detail string, kept bool, wait <-chan pushOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reason, detail = s.checkPushLocked(h); reason != "" {
		return s.version, reason, detail, false, nil
	}
	if s.cfg.Mode == job.ModeSync {
		if len(s.pending) == 0 {
			s.startStepLocked()
		}
		s.pending[h.worker] = buf
		s.m.pending.Store(int64(len(s.pending)))
		if s.decided() {
			ch := make(chan pushOutcome, 1)
			s.waits[h.worker] = ch
			s.kickDecider()
			return s.version, "", "", true, ch
		}
		s.maybeCompleteLocked()
		return s.version, "", "", true, nil // t, or t+1 if this push completed the step
	}
	if s.cfg.Mode == job.ModeSSP {
		delete(s.idle, h.worker) // a push makes a worker active again
		if reason, detail = s.holdLocked(ctx, h); reason != "" {
			return s.version, reason, detail, false, nil
		}
	}
	start := time.Now()
	s.m.staleness.Observe(float64(s.version - h.base))
	s.applyLocked(buf)
	s.clocks[h.worker] = h.step + 1
	s.version++
	s.m.steps.Add(1)
	s.m.stepSeconds.Observe(time.Since(start).Seconds())
	s.weightsChangedLocked()
	return s.version, "", "", false, nil
}

// holdLocked waits (unlocking while it waits) until the push of step h.step
// is within the staleness bound of the slowest active worker, re-checking
// the push whenever clocks or membership change.
func (s *Server) holdLocked(ctx context.Context, h *pushHeader) (reason, detail string) {
	for {
		slowest, ok := s.slowestLocked(h.worker)
		if !ok || h.step <= slowest+int64(s.cfg.Staleness) {
			return "", ""
		}
		ch := s.clockCh
		s.held++
		s.m.pending.Store(int64(s.held))
		s.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		case <-s.done:
		}
		s.mu.Lock()
		s.held--
		s.m.pending.Store(int64(s.held))
		if err != nil {
			return wire.ReasonCanceled, err.Error()
		}
		if reason, detail = s.checkPushLocked(h); reason != "" {
			return reason, detail
		}
	}
}

// slowestLocked is the smallest clock among the active workers other than
// self that have pushed at least once and are not idle.
func (s *Server) slowestLocked(self string) (int64, bool) {
	var c int64
	found := false
	for w := range s.member {
		if w == self || s.idle[w] {
			continue
		}
		if v, ok := s.clocks[w]; ok && (!found || v < c) {
			c, found = v, true
		}
	}
	return c, found
}

// applyLocked runs one optimizer step with grad (a flat vector of the
// server's parts) and sets the State parts to grad's values.
func (s *Server) applyLocked(grad []float32) { s.applyScaledLocked(grad, 1) }

// applyScaledLocked is applyLocked with the step's learning rate
// multiplied by f.
func (s *Server) applyScaledLocked(grad []float32, f float64) {
	start := time.Now()
	defer func() { s.m.updateSeconds.Observe(time.Since(start).Seconds()) }()
	if s.skipUpdate {
		return
	}
	j := 0
	for _, p := range s.parts {
		g := grad[p.Flat : p.Flat+p.Len]
		if p.Kind == wire.Param {
			s.gviews[j] = g
			j++
		} else {
			copy(s.weights[p.Flat:p.Flat+p.Len], g)
		}
	}
	if err := s.adam.UpdateScaled(s.pviews, s.gviews, f); err != nil {
		panic("paramserver: optimizer views out of shape: " + err.Error()) // sizes are fixed at New
	}
	clear(s.gviews)
}

// ---- sync ----

func (s *Server) startStepLocked() {
	s.stepStart = time.Now()
	if s.decided() {
		return // the Decider's deadline, not ours
	}
	s.expected = make(map[string]bool, len(s.member))
	for w := range s.member {
		s.expected[w] = true
	}
	step := s.version
	s.timer = time.AfterFunc(s.cfg.StepDeadline, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed && s.version == step && len(s.pending) > 0 {
			s.completeLocked(endDeadline)
		}
	})
}

// maybeCompleteLocked applies the sync step if every active worker's
// gradient is in (gradients of workers that have since left count), or
// if the quorum is reached.
func (s *Server) maybeCompleteLocked() {
	if len(s.pending) == 0 || s.closed {
		return
	}
	all := true
	for w := range s.member {
		if s.pending[w] == nil {
			all = false
			break
		}
	}
	switch {
	case all:
		s.completeLocked(endAll)
	case s.cfg.SyncQuorum > 0 && len(s.pending) >= s.cfg.SyncQuorum:
		s.completeLocked(endQuorum)
	}
}

// completeLocked averages the pending gradients in worker-id order and
// applies them: version t becomes t+1.
func (s *Server) completeLocked(end string) {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	ids := make([]string, 0, len(s.pending))
	for w := range s.pending {
		ids = append(ids, w)
	}
	slices.Sort(ids)
	missing := 0
	for w := range s.expected {
		if s.pending[w] == nil {
			missing++
		}
	}
	for w := range s.member {
		if s.pending[w] == nil && !s.expected[w] {
			missing++
		}
	}
	if end == endAll && missing > 0 {
		end = endMembership
	}
	s.applyPendingLocked(ids)
	s.m.syncSteps.WithLabelValues(end).Inc()
	if missing > 0 {
		s.m.missing.Add(uint64(missing))
		s.m.missingByEnd.WithLabelValues(end).Add(float64(missing))
		s.log.Warn("sync step applied without some workers", "step", s.version-1, "gradients", len(ids), "missing", missing, "end", end)
	}
	s.weightsChangedLocked()
}

// applyPendingLocked applies the average of the pending gradients of ids
// (a subset of the pending workers; none for an empty step), summed in
// the order of ids, recycles every pending buffer and moves to the next version. The caller counts the
// step's end and calls weightsChangedLocked.
func (s *Server) applyPendingLocked(ids []string) {
	grads := make([][]float32, len(ids))
	for i, w := range ids {
		grads[i] = s.pending[w]
	}
	f := 1.0
	if s.cfg.StepLR != nil && len(grads) > 0 {
		f = s.cfg.StepLR(len(grads))
	}
	switch len(grads) {
	case 0:
		// an empty step (a decision that includes nobody): the version
		// moves on, the weights and the optimizer's state stay
	case 1:
		s.applyScaledLocked(grads[0], f)
	default:
		if s.avg == nil {
			s.avg = make([]float32, s.size)
		}
		average(s.avg, grads)
		s.applyScaledLocked(s.avg, f)
	}
	for w, b := range s.pending {
		s.bufs.put(b)
		delete(s.pending, w)
	}
	s.expected = nil
	s.m.pending.Store(0)
	s.version++
	s.m.steps.Add(1)
	s.m.stepSeconds.Observe(time.Since(s.stepStart).Seconds())
}

// average sets dst to the mean of srcs: for each float, the float64 sum in
// the order of srcs (worker-id order, or the Decider's), divided by
// len(srcs), rounded to float32. The result depends only on the inputs, not on arrival order.
func average(dst []float32, srcs [][]float32) {
	const block = 2048
	var acc [block]float64
	n := float64(len(srcs))
	for lo := 0; lo < len(dst); lo += block {
		hi := min(lo+block, len(dst))
		a := acc[:hi-lo]
		for j, x := range srcs[0][lo:hi] {
			a[j] = float64(x)
		}
		for _, src := range srcs[1:] {
			for j, x := range src[lo:hi] {
				a[j] += float64(x)
			}
		}
		d := dst[lo:hi]
		for j := range d {
			d[j] = float32(a[j] / n)
		}
	}
}

// ---- init ----

func (s *Server) applyInit(buf []float32) (version int64, reason, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return 0, wire.ReasonClosed, ""
	case s.initialised:
		return s.version, wire.ReasonInitialised, ""
	}
	copy(s.weights, buf)
	s.resetLocked(0)
	s.weightsChangedLocked()
	s.log.Info("initial weights received")
	return 0, "", ""
}

// resetLocked starts afresh at version with the current weights: fresh
// optimizer, no pending gradients, no worker clocks. The caller then calls
// weightsChangedLocked.
func (s *Server) resetLocked(version int64) {
	if err := s.resetOptimizerLocked(); err != nil {
		panic(err) // the config was validated in New
	}
	s.clearPendingLocked()
	s.recent = nil
	s.failed = nil // consistent weights again (Restore of a checkpoint)
	clear(s.clocks)
	clear(s.idle)
	s.initialised = true
	s.version = version
	if s.decided() {
		// a report of the old timeline still in flight is cancelled, so a
		// leader restoring a checkpoint never hears of a step undone
		s.kickDecider()
	}
}

func (s *Server) clearPendingLocked() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	for w, b := range s.pending {
		s.bufs.put(b)
		delete(s.pending, w)
	}
	s.expected = nil
	s.m.pending.Store(0)
	s.answerWaitsLocked(pushOutcome{version: s.version, reason: wire.ReasonStale, detail: "the server was reset; the step's gradients were dropped"})
}
