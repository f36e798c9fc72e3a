package coordinator

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

func newTestSteps(tb testing.TB, servers, quorum int, edit ...func(*StepsConfig)) *Steps {
	tb.Helper()
	cfg := StepsConfig{RunID: "run-test", Servers: servers, Quorum: quorum, Deadline: time.Minute}
	for _, e := range edit {
		e(&cfg)
	}
	s, err := NewSteps(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// report is one Report call running in the background.
type report struct {
	done chan struct{}
	d    wire.Decision
	err  error
}

func startReport(s *Steps, server int, step int64, complete ...string) *report {
	r := &report{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.d, r.err = s.Report(ctx, server, step, complete)
	}()
	return r
}

// wait returns the report's decision, failing the test if it does not
// come within the deadline.
func (r *report) wait(tb testing.TB) wire.Decision {
	tb.Helper()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		tb.Fatal("report not answered")
	}
	if r.err != nil {
		tb.Fatalf("report: %v", r.err)
	}
	return r.d
}

// pending fails unless the report is still waiting after a short while.
func (r *report) pending(tb testing.TB) {
	tb.Helper()
	select {
	case <-r.done:
		tb.Fatalf("report answered early: %+v, %v", r.d, r.err)
	case <-time.After(30 * time.Millisecond):
	}
}

func wantDecision(tb testing.TB, got wire.Decision, step int64, included, excluded []string) {
	tb.Helper()
	want := wire.Decision{Step: step, Included: included, Excluded: excluded}
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("decision: got %+v, want %+v", got, want)
	}
}

func TestStepsAllParticipants(t *testing.T) {
	s := newTestSteps(t, 2, 0)
	// Rank order is the participants' order, not the ids' order.
	if err := s.SetParticipants(0, []string{"w2", "w0", "w1"}); err != nil {
		t.Fatal(err)
	}
	a := startReport(s, 0, 0, "w0", "w1", "w2")
	b := startReport(s, 1, 0, "w0", "w2")
	a.pending(t)
	b.pending(t)
	c := startReport(s, 1, 0, "w1") // reports add up
	for _, r := range []*report{a, b, c} {
		wantDecision(t, r.wait(t), 0, []string{"w2", "w0", "w1"}, nil)
	}
	// Asked again, with any set, the same answer.
	again := startReport(s, 0, 0, "w0")
	wantDecision(t, again.wait(t), 0, []string{"w2", "w0", "w1"}, nil)
	if d, ok := s.Decision(0); !ok || !d.Includes("w1") {
		t.Errorf("Decision(0) = %+v, %v", d, ok)
	}
	// Participants carry over to the next step.
	x := startReport(s, 0, 1, "w0", "w1", "w2")
	y := startReport(s, 1, 1, "w0", "w1", "w2")
	wantDecision(t, x.wait(t), 1, []string{"w2", "w0", "w1"}, nil)
	wantDecision(t, y.wait(t), 1, []string{"w2", "w0", "w1"}, nil)
}

// A participant that pushed to one server only and then died: dropping it
// decides the step without it, though one server holds its gradient.
func TestStepsDrop(t *testing.T) {
	s := newTestSteps(t, 2, 0)
	s.SetParticipants(0, []string{"w0", "w1", "w2"})
	a := startReport(s, 0, 0, "w0", "w1", "w2")
	b := startReport(s, 1, 0, "w0", "w1")
	a.pending(t)
	s.Drop("w2")
	wantDecision(t, a.wait(t), 0, []string{"w0", "w1"}, []string{"w2"})
	wantDecision(t, b.wait(t), 0, []string{"w0", "w1"}, []string{"w2"})
	if got := s.Participants(1); !reflect.DeepEqual(got, []string{"w0", "w1"}) {
		t.Errorf("participants of step 1: %v", got)
	}
	// A dropped worker complete everywhere is still out: S_t holds
	// participants only.
	c := startReport(s, 0, 1, "w0", "w1")
	d := startReport(s, 1, 1, "w1")
	d.pending(t)
	s.Drop("w0")
	wantDecision(t, c.wait(t), 1, []string{"w1"}, []string{"w0"})
	wantDecision(t, d.wait(t), 1, []string{"w1"}, []string{"w0"})
}

func TestStepsQuorum(t *testing.T) {
	s := newTestSteps(t, 2, 2)
	s.SetParticipants(0, []string{"w0", "w1", "w2"})
	// All three complete at once: the two lowest ranks make the step.
	a := startReport(s, 0, 0, "w0", "w1", "w2")
	a.pending(t)
	b := startReport(s, 1, 0, "w0", "w1", "w2")
	wantDecision(t, a.wait(t), 0, []string{"w0", "w1"}, []string{"w2"})
	wantDecision(t, b.wait(t), 0, []string{"w0", "w1"}, []string{"w2"})
	// One at a time: the first two complete on both servers, in rank order.
	c := startReport(s, 0, 1, "w2")
	d := startReport(s, 1, 1, "w2")
	c.pending(t)
	e := startReport(s, 1, 1, "w0", "w2")
	e.pending(t)
	f := startReport(s, 0, 1, "w0", "w2")
	for _, r := range []*report{c, d, e, f} {
		wantDecision(t, r.wait(t), 1, []string{"w0", "w2"}, []string{"w1"})
	}
	// Fewer participants than the quorum: all of them.
	s.Drop("w1")
	s.Drop("w2")
	g := startReport(s, 0, 2, "w0")
	h := startReport(s, 1, 2, "w0")
	wantDecision(t, g.wait(t), 2, []string{"w0"}, nil)
	wantDecision(t, h.wait(t), 2, []string{"w0"}, nil)
}

func TestStepsDeadline(t *testing.T) {
	s := newTestSteps(t, 2, 0, func(c *StepsConfig) { c.Deadline = 100 * time.Millisecond })
	s.SetParticipants(0, []string{"w0", "w1", "w2"})
	start := time.Now()
	a := startReport(s, 0, 0, "w0", "w1")
	b := startReport(s, 1, 0, "w1", "w2")
	wantDecision(t, a.wait(t), 0, []string{"w1"}, []string{"w0", "w2"})
	wantDecision(t, b.wait(t), 0, []string{"w1"}, []string{"w0", "w2"})
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Errorf("decided after %v, before the deadline", el)
	}
}

// Past the deadline with no participant complete on every server, the
// step is decided empty: nobody's gradient is applied and everybody who
// pushed is excluded (late), instead of waiting for ever.
func TestStepsDeadlineNobodyComplete(t *testing.T) {
	s := newTestSteps(t, 2, 0, func(c *StepsConfig) { c.Deadline = 100 * time.Millisecond })
	s.SetParticipants(0, []string{"w0", "w1", "w2"})
	a := startReport(s, 0, 0, "w0")
	b := startReport(s, 1, 0, "w1")
	wantDecision(t, a.wait(t), 0, nil, []string{"w0", "w1", "w2"})
	wantDecision(t, b.wait(t), 0, nil, []string{"w0", "w1", "w2"})
	// the next step is decided as usual
	c := startReport(s, 0, 1, "w0", "w1", "w2")
	d := startReport(s, 1, 1, "w0", "w1", "w2")
	wantDecision(t, c.wait(t), 1, []string{"w0", "w1", "w2"}, nil)
	wantDecision(t, d.wait(t), 1, []string{"w0", "w1", "w2"}, nil)
}

func TestStepsNoParticipantsWaits(t *testing.T) {
	s := newTestSteps(t, 1, 0)
	a := startReport(s, 0, 0, "w0")
	a.pending(t)
	s.SetParticipants(0, []string{"w0"})
	wantDecision(t, a.wait(t), 0, []string{"w0"}, nil)
	// Everyone dropped: nothing to decide, until someone joins.
	s.Drop("w0")
	b := startReport(s, 0, 1, "w0")
	b.pending(t)
	s.SetParticipants(1, []string{"w1"})
	c := startReport(s, 0, 1, "w1")
	wantDecision(t, c.wait(t), 1, []string{"w1"}, []string{"w0"})
	wantDecision(t, b.wait(t), 1, []string{"w1"}, []string{"w0"})
}

func TestStepsForgetsOld(t *testing.T) {
	s := newTestSteps(t, 1, 0, func(c *StepsConfig) { c.Keep = 2 })
	s.SetParticipants(0, []string{"w0"})
	for step := range int64(3) {
		startReport(s, 0, step, "w0").wait(t)
	}
	if _, err := s.Report(context.Background(), 0, 0, []string{"w0"}); !errors.Is(err, ErrForgotten) {
		t.Errorf("report of a forgotten step: got %v, want ErrForgotten", err)
	}
	if _, ok := s.Decision(1); !ok {
		t.Error("decision of step 1 forgotten, want kept")
	}
}

func TestStepsBadReports(t *testing.T) {
	s := newTestSteps(t, 2, 0)
	ctx := context.Background()
	for _, tc := range []struct {
		server   int
		step     int64
		complete []string
	}{
		{2, 0, []string{"w0"}},
		{-1, 0, []string{"w0"}},
		{0, -1, []string{"w0"}},
		{0, 0, []string{"w1", "w0"}},
		{0, 0, []string{"w0", "w0"}},
		{0, 0, []string{""}},
	} {
		if _, err := s.Report(ctx, tc.server, tc.step, tc.complete); !errors.Is(err, ErrBadReport) {
			t.Errorf("report %+v: got %v, want ErrBadReport", tc, err)
		}
	}
	for _, ids := range [][]string{{"w0", "w0"}, {""}} {
		if err := s.SetParticipants(0, ids); !errors.Is(err, ErrBadReport) {
			t.Errorf("participants %q: got %v, want ErrBadReport", ids, err)
		}
	}
	if _, err := NewSteps(StepsConfig{RunID: "r", Servers: 0}); !errors.Is(err, ErrStepsConfig) {
		t.Errorf("0 servers: got %v", err)
	}
}

// Commit records a decision before anyone sees it; a failed commit is
// retried, and a decision recorded earlier wins over the new one.
func TestStepsCommit(t *testing.T) {
	var mu sync.Mutex
	var recorded []wire.Decision
	var calls atomic.Int32
	s := newTestSteps(t, 1, 0, func(c *StepsConfig) {
		c.Commit = func(ctx context.Context, d wire.Decision) (wire.Decision, error) {
			n := calls.Add(1)
			switch {
			case n == 1:
				return wire.Decision{}, errors.New("etcd unavailable")
			case d.Step == 1:
				// A previous leader recorded step 1 with w1 alone.
				return wire.Decision{Step: 1, Included: []string{"w1"}, Excluded: []string{"w0"}}, nil
			}
			mu.Lock()
			recorded = append(recorded, d)
			mu.Unlock()
			return d, nil
		}
	})
	s.SetParticipants(0, []string{"w0", "w1"})
	wantDecision(t, startReport(s, 0, 0, "w0", "w1").wait(t), 0, []string{"w0", "w1"}, nil)
	if n := calls.Load(); n != 2 {
		t.Errorf("commit calls %d, want 2 (a failure, then the record)", n)
	}
	mu.Lock()
	if len(recorded) != 1 || recorded[0].Step != 0 {
		t.Errorf("recorded %+v", recorded)
	}
	mu.Unlock()
	wantDecision(t, startReport(s, 0, 1, "w0", "w1").wait(t), 1, []string{"w1"}, []string{"w0"})
}

func TestStepsLoad(t *testing.T) {
	s := newTestSteps(t, 2, 0)
	d := wire.Decision{Step: 7, Included: []string{"w1", "w0"}}
	if err := s.Load(d); err != nil {
		t.Fatal(err)
	}
	// No participants are set: the answer comes from the loaded record.
	wantDecision(t, startReport(s, 1, 7, "w0").wait(t), 7, []string{"w1", "w0"}, nil)
	if err := s.Load(d); err != nil {
		t.Errorf("loading the same decision again: %v", err)
	}
	if err := s.Load(wire.Decision{Step: 7, Included: []string{"w0"}}); !errors.Is(err, ErrDecisionConflict) {
		t.Errorf("conflicting decision: got %v", err)
	}
}

func TestStepsCloseFailsWaiters(t *testing.T) {
	s := newTestSteps(t, 2, 0)
	s.SetParticipants(0, []string{"w0"})
	a := startReport(s, 0, 0, "w0")
	a.pending(t)
	s.Close()
	<-a.done
	if !errors.Is(a.err, ErrStepsClosed) {
		t.Errorf("waiting report after Close: got %v", a.err)
	}
}

// After Reset a step decided before can be decided again, differently.
func TestStepsReset(t *testing.T) {
	var mu sync.Mutex
	var commits []wire.Decision
	s, err := NewSteps(StepsConfig{RunID: "r", Servers: 1, Commit: func(ctx context.Context, d wire.Decision) (wire.Decision, error) {
		mu.Lock()
		defer mu.Unlock()
		commits = append(commits, d)
		return d, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.SetParticipants(0, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	d, err := s.Report(ctx, 0, 0, []string{"a", "b"})
	if err != nil || len(d.Included) != 2 {
		t.Fatalf("step 0: %+v %v", d, err)
	}
	// step 1 is open (only a reported) when the run is rolled back
	waiting := make(chan error, 1)
	go func() { _, err := s.Report(ctx, 0, 1, []string{"a"}); waiting <- err }()
	time.Sleep(50 * time.Millisecond)
	s.Reset()
	if err := <-waiting; !errors.Is(err, ErrStepsReset) {
		t.Errorf("report waiting on an open step: %v, want ErrStepsReset", err)
	}
	if err := s.SetParticipants(0, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	d, err = s.Report(ctx, 0, 0, []string{"a"})
	if err != nil || len(d.Included) != 1 || d.Included[0] != "a" {
		t.Fatalf("step 0 after reset: %+v %v", d, err)
	}
	if len(commits) != 2 {
		t.Errorf("%d commits, want 2", len(commits))
	}
}

// A failed commit is retried after 100 ms doubling to 5 s, ±20%.
func TestCommitBackoff(t *testing.T) {
	b := commitBackoff()
	for n := 1; n <= 10; n++ {
		want := min(100*time.Millisecond<<(n-1), 5*time.Second)
		lo, hi := time.Duration(0.8*float64(want)), time.Duration(1.2*float64(want))
		if got := b.Next(); got < lo || got > hi {
			t.Errorf("retry %d: wait %v; want %v ±20%%", n, got, want)
		}
	}
}
