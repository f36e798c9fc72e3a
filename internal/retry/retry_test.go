package retry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestBackoffDoublesToMax(t *testing.T) {
	for _, c := range []struct {
		name       string
		b          Backoff
		want       []time.Duration
		afterReset time.Duration
	}{
		{"zero value", Backoff{}, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
			1600 * time.Millisecond, 3 * time.Second, 3 * time.Second}, 100 * time.Millisecond},
		{"custom", Backoff{Base: time.Second, Max: 5 * time.Second}, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second},
			time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			for i, w := range c.want {
				if got := c.b.Next(); got != w {
					t.Errorf("wait %d: got %v, want %v", i, got, w)
				}
			}
			if c.b.Attempts() != len(c.want) {
				t.Errorf("attempts %d, want %d", c.b.Attempts(), len(c.want))
			}
			c.b.Reset()
			if got := c.b.Next(); got != c.afterReset {
				t.Errorf("after reset: got %v, want %v", got, c.afterReset)
			}
		})
	}
}

func TestBackoffJitterBounded(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.5}
	for range 100 {
		if d := b.Next(); d < 100*time.Millisecond || d > 150*time.Millisecond {
			t.Fatalf("wait %v outside [100ms, 150ms]", d)
		}
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := Backoff{Base: time.Hour}
	if b.Wait(ctx) {
		t.Error("Wait returned true on a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep(1ms) returned false")
	}
}

// A streak of failures logs two lines however long it is: one when it
// starts, one with the count when it ends.
func TestStreakLogsOnceEachWay(t *testing.T) {
	var buf bytes.Buffer
	s := &Streak{Log: slog.New(slog.NewTextHandler(&buf, nil)), What: "pulling weights"}
	if n := s.OK(); n != 0 {
		t.Errorf("OK without a streak: %d", n)
	}
	for i := range 1000 {
		s.Fail(errors.New("refused"), "attempt", i)
	}
	if n, _ := s.Failing(); n != 1000 {
		t.Errorf("failing %d, want 1000", n)
	}
	if n := s.OK(); n != 1000 {
		t.Errorf("OK: %d failures, want 1000", n)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], `msg="pulling weights failed; retrying"`) || !strings.Contains(lines[0], "err=refused") {
		t.Errorf("first line: %s", lines[0])
	}
	if !strings.Contains(lines[1], `msg="pulling weights recovered"`) || !strings.Contains(lines[1], "failures=1000") {
		t.Errorf("second line: %s", lines[1])
	}
	if n, _ := s.Failing(); n != 0 {
		t.Errorf("failing after OK: %d", n)
	}
}
