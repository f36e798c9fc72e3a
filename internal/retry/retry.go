// Package retry holds the two pieces every retry loop of tailor needs: a
// context-aware exponential backoff, and a Streak that logs a run of
// failures once when it starts and once when it ends, with its count and
// length, instead of once per attempt.
package retry

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff is an exponential backoff: Next returns Base, then twice that,
// and so on up to Max, each with up to Jitter (a fraction) added at random.
// The zero value waits 100 ms, doubling to 3 s, without jitter. A Backoff
// is not safe for concurrent use.
type Backoff struct {
	Base, Max time.Duration
	Jitter    float64
	attempt   int
}

// Next returns the wait before the next attempt and counts it.
func (b *Backoff) Next() time.Duration {
	base, maxd := b.Base, b.Max
	if base <= 0 {
		base = 100 * time.Millisecond
	}
	if maxd <= 0 {
		maxd = 3 * time.Second
	}
	d := base
	for i := 0; i < b.attempt && d < maxd; i++ {
		d *= 2
	}
	d = min(d, maxd)
	b.attempt++
	if b.Jitter > 0 {
		d += time.Duration(rand.Float64() * b.Jitter * float64(d))
	}
	return d
}

// Reset starts again from Base (after a success).
func (b *Backoff) Reset() { b.attempt = 0 }

// Attempts is the number of waits since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Wait sleeps for Next() or until ctx ends; it reports whether the full
// wait passed (false: ctx ended).
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// Sleep sleeps for d or until ctx ends; it reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Streak logs a run of failures of one operation: Fail logs a warning at
// the first failure of a streak (with its error) and counts the rest
// silently; OK ends the streak with one line saying how many attempts
// failed and for how long. A Streak is safe for concurrent use.
type Streak struct {
	Log  *slog.Logger
	What string // what is retried: "asking for work", "pulling weights"

	mu    sync.Mutex
	n     int
	start time.Time
	last  error
}

// Fail records a failed attempt; it logs only the first of a streak.
func (s *Streak) Fail(err error, attrs ...any) {
	s.mu.Lock()
	s.n++
	first := s.n == 1
	if first {
		s.start = time.Now()
	}
	s.last = err
	s.mu.Unlock()
	if first && s.Log != nil {
		s.Log.Warn(s.What+" failed; retrying", append([]any{"err", err}, attrs...)...)
	}
}

// OK ends a streak, if one is open, with one line giving its count and
// duration; it reports how many attempts the streak had failed.
func (s *Streak) OK(attrs ...any) int {
	s.mu.Lock()
	n, start, last := s.n, s.start, s.last
	s.n, s.last = 0, nil
	s.mu.Unlock()
	if n > 0 && s.Log != nil {
		s.Log.Info(s.What+" recovered", append([]any{"failures", n, "for_s", time.Since(start).Round(time.Millisecond).Seconds(), "last_err", last}, attrs...)...)
	}
	return n
}

// Failing returns the failures of the open streak (0: none) and when it
// began.
func (s *Streak) Failing() (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.start
}
