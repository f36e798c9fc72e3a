package coordinator

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tailorml/tailor/internal/retry"
	"github.com/tailorml/tailor/internal/wire"
)

// How Steps decides one step: an open step collects the servers' reports
// until its participants are complete on every server (or a quorum of
// them, or its deadline passes), then the decision is committed and
// published to the waiting reports.

// openStep is an undecided step.
type openStep struct {
	step       int64
	has        []map[string]bool // by server: workers reported complete (the union of its reports)
	dropped    map[string]bool   // participants dropped while the step was open
	deadline   *time.Timer
	overdue    bool
	committing bool
	backoff    retry.Backoff // between failed commits
	fails      retry.Streak  // failed commits: logged when they start and when they end
	retry      *time.Timer

	done chan struct{} // closed when decided (d) or abandoned (err)
	d    wire.Decision
	err  error
}

func (st *openStep) completeEverywhere(w string) bool {
	for _, has := range st.has {
		if !has[w] {
			return false
		}
	}
	return true
}

func (s *Steps) newStepLocked(step int64) *openStep {
	st := &openStep{step: step, has: make([]map[string]bool, s.cfg.Servers), dropped: map[string]bool{}, done: make(chan struct{}),
		backoff: commitBackoff()}
	for i := range st.has {
		st.has[i] = map[string]bool{}
	}
	st.deadline = time.AfterFunc(s.cfg.Deadline, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.open[step] == st {
			st.overdue = true
			s.log.Warn("sync step deadline passed: deciding with the workers complete on every server", "step", step, "deadline", s.cfg.Deadline)
			s.evaluateLocked(st)
		}
	})
	s.open[step] = st
	return st
}

func (st *openStep) stopTimers() {
	st.deadline.Stop()
	if st.retry != nil {
		st.retry.Stop()
	}
}

func (s *Steps) evaluateAllLocked() {
	for _, st := range s.open {
		s.evaluateLocked(st)
	}
}

// evaluateLocked decides st if it can, and commits (then publishes) the
// decision.
func (s *Steps) evaluateLocked(st *openStep) {
	if s.closed || st.committing {
		return
	}
	ps := s.participantsLocked(st.step)
	if len(ps) == 0 {
		return
	}
	var complete []string
	for _, w := range ps {
		if st.completeEverywhere(w) {
			complete = append(complete, w)
		}
	}
	k := len(ps)
	if q := s.cfg.Quorum; q > 0 && q < k {
		k = q
	}
	var inc []string
	switch {
	case len(complete) >= k:
		inc = complete[:k]
	case st.overdue:
		// Past the deadline: the participants complete on every server
		// make the step. If there are none (each gradient is missing on
		// some server), the step is empty: every server moves on without
		// applying anything and every pusher is late, so its batch goes
		// back to the epoch. Waiting longer could wait for ever.
		inc = complete
	default:
		return
	}
	d := wire.Decision{Step: st.step, Included: slices.Clone(inc), Excluded: excluded(st, ps, inc)}
	st.committing = true
	if s.cfg.Commit == nil {
		s.publishLocked(st, d)
		return
	}
	s.wg.Add(1)
	go s.commit(st, d)
}

// excluded are the participants, dropped participants and reported
// workers of st that are not in inc, sorted.
func excluded(st *openStep, ps, inc []string) []string {
	set := map[string]bool{}
	for _, w := range ps {
		set[w] = true
	}
	for w := range st.dropped {
		set[w] = true
	}
	for _, has := range st.has {
		for w := range has {
			set[w] = true
		}
	}
	for _, w := range inc {
		delete(set, w)
	}
	if len(set) == 0 {
		return nil
	}
	out := make([]string, 0, len(set))
	for w := range set {
		out = append(out, w)
	}
	slices.Sort(out)
	return out
}

// commit records d with cfg.Commit and publishes what is recorded; on
// failure the step is evaluated again after a backoff.
func (s *Steps) commit(st *openStep, d wire.Decision) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-s.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	got, err := s.cfg.Commit(ctx, d)
	if err == nil && got.Step != d.Step {
		err = fmt.Errorf("commit of step %d returned step %d", d.Step, got.Step)
	}
	if err == nil {
		err = got.Validate()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.open[st.step] != st {
		return
	}
	st.fails.Log, st.fails.What = s.log, "recording a sync-step decision"
	if err != nil {
		st.committing = false
		delay := st.backoff.Next()
		st.fails.Fail(err, "step", st.step, "retry_in", delay)
		st.retry = time.AfterFunc(delay, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.open[st.step] == st {
				s.evaluateLocked(st)
			}
		})
		return
	}
	st.fails.OK("step", st.step)
	s.publishLocked(st, got)
}

// publishLocked makes d the decision of st's step: it answers the
// waiting reports, remembers d and forgets what d makes obsolete.
func (s *Steps) publishLocked(st *openStep, d wire.Decision) {
	step := st.step
	st.stopTimers()
	st.d = d
	close(st.done)
	delete(s.open, step)
	s.decided[step] = d
	i, _ := slices.BinarySearch(s.kept, step)
	s.kept = slices.Insert(s.kept, i, step)
	for len(s.kept) > s.cfg.Keep {
		old := s.kept[0]
		s.kept = s.kept[1:]
		delete(s.decided, old)
		s.floor = max(s.floor, old+1)
	}
	// Every server has passed the steps below a decided one: an open one
	// is a stray report that can never be decided.
	for t, o := range s.open {
		if t < step && !o.committing {
			o.stopTimers()
			o.err = fmt.Errorf("%w: step %d passed undecided (step %d is decided)", ErrForgotten, t, step)
			close(o.done)
			delete(s.open, t)
		}
	}
	// Participants that only applied to steps up to this one are obsolete.
	j := 0
	for j+1 < len(s.parts) && s.parts[j+1].from <= step+1 {
		j++
	}
	s.parts = s.parts[j:]
	if len(d.Excluded) > 0 {
		s.log.Info("sync step decided without some workers", "step", step, "included", d.Included, "excluded", d.Excluded)
	} else {
		s.log.Debug("sync step decided", "step", step, "included", d.Included)
	}
}

func sameDecision(a, b wire.Decision) bool {
	return a.Step == b.Step && slices.Equal(a.Included, b.Included) && slices.Equal(a.Excluded, b.Excluded)
}

// commitBackoff is the wait between failed commits of a step: 100 ms
// doubling to 5 s, ±20% jitter (80 ms doubling to 4 s, plus up to half).
func commitBackoff() retry.Backoff {
	return retry.Backoff{Base: 80 * time.Millisecond, Max: 4 * time.Second, Jitter: 0.5}
}
