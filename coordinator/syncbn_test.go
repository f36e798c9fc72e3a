package coordinator

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/wire"
)

// bnRig is a bnReducer with participants and a generation the test sets.
type bnRig struct {
	mu       sync.Mutex
	parts    []string
	gen      uint64
	deadline time.Duration
	timedOut []string
	r        *bnReducer
}

func newBNRig(t *testing.T, parts ...string) *bnRig {
	return newBNRigDeadline(t, time.Minute, parts...)
}

func newBNRigDeadline(t *testing.T, deadline time.Duration, parts ...string) *bnRig {
	g := &bnRig{parts: parts, gen: 7, deadline: deadline}
	g.r = newBNReducer("run", func(int64) []string {
		g.mu.Lock()
		defer g.mu.Unlock()
		return slices.Clone(g.parts)
	}, func() uint64 {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.gen
	}, g.deadline, func(step int64, missing []string) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.timedOut = append(g.timedOut, missing...)
	}, slog.New(slog.DiscardHandler))
	t.Cleanup(g.r.Close)
	return g
}

type bnCall struct {
	done chan struct{}
	rep  *wire.BNReply
	err  error
}

func (g *bnRig) send(w string, step int64, slot int, vals ...float64) *bnCall {
	c := &bnCall{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.rep, c.err = g.r.Reduce(ctx, &wire.BNRequest{RunID: "run", WorkerID: w, Gen: 7, Step: step, Slot: slot, Values: vals})
	}()
	return c
}

func (c *bnCall) wait(t *testing.T) (*wire.BNReply, error) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	return c.rep, c.err
}

func (c *bnCall) pending(t *testing.T) {
	t.Helper()
	select {
	case <-c.done:
		t.Fatalf("answered early: %+v %v", c.rep, c.err)
	case <-time.After(30 * time.Millisecond):
	}
}

func wantTotal(t *testing.T, c *bnCall, workers int, want ...float64) {
	t.Helper()
	rep, err := c.wait(t)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Values, want) || rep.Workers != workers {
		t.Fatalf("total %v of %d workers, want %v of %d", rep.Values, rep.Workers, want, workers)
	}
}

func TestBNReduceTotalsEveryParticipant(t *testing.T) {
	g := newBNRig(t, "w0", "w1", "w2")
	a := g.send("w2", 3, 0, 1, 2)
	b := g.send("w0", 3, 0, 10, 20)
	a.pending(t)
	// another slot of the same step is independent
	other := g.send("w1", 3, 1, 5)
	c := g.send("w1", 3, 0, 100, 200)
	for _, call := range []*bnCall{a, b, c} {
		wantTotal(t, call, 3, 111, 222)
	}
	other.pending(t)
	// a retried contribution to a totalled slot gets the same answer
	wantTotal(t, g.send("w1", 3, 0, 100, 200), 3, 111, 222)
}

// A participant that leaves is not waited for: the slot totals the others.
func TestBNReduceDroppedParticipant(t *testing.T) {
	g := newBNRig(t, "w0", "w1", "w2")
	a := g.send("w0", 1, 4, 1)
	b := g.send("w1", 1, 4, 2)
	a.pending(t)
	g.mu.Lock()
	g.parts = []string{"w0", "w1"}
	g.mu.Unlock()
	g.r.Reevaluate()
	wantTotal(t, a, 2, 3)
	wantTotal(t, b, 2, 3)
}

func TestBNReduceRefusals(t *testing.T) {
	g := newBNRig(t, "w0", "w1")
	g.r.Finished(4)
	for _, tc := range []struct {
		name string
		req  wire.BNRequest
		code codes.Code
	}{
		{"another run", wire.BNRequest{RunID: "x", WorkerID: "w0", Gen: 7, Step: 5, Values: []float64{1}}, codes.FailedPrecondition},
		{"another generation", wire.BNRequest{RunID: "run", WorkerID: "w0", Gen: 8, Step: 5, Values: []float64{1}}, codes.FailedPrecondition},
		{"a finished step", wire.BNRequest{RunID: "run", WorkerID: "w0", Gen: 7, Step: 4, Values: []float64{1}}, codes.FailedPrecondition},
		{"no participant", wire.BNRequest{RunID: "run", WorkerID: "w9", Gen: 7, Step: 5, Values: []float64{1}}, codes.FailedPrecondition},
	} {
		_, err := g.r.Reduce(context.Background(), &tc.req)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if st, _ := status.FromError(err); tc.name != "another run" && st.Code() != tc.code {
			t.Errorf("%s: %v, want code %v", tc.name, err, tc.code)
		}
	}
	// values of another length than the slot's others
	a := g.send("w0", 5, 0, 1, 2)
	a.pending(t)
	if _, err := g.r.Reduce(context.Background(), &wire.BNRequest{RunID: "run", WorkerID: "w1", Gen: 7, Step: 5, Values: []float64{1}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("mismatched length: %v", err)
	}
}

// A rollback (a new generation) fails the workers waiting in a slot: they
// fail their step and ask for work again.
func TestBNReduceReset(t *testing.T) {
	g := newBNRig(t, "w0", "w1")
	a := g.send("w0", 2, 0, 1)
	a.pending(t)
	g.r.Reset()
	if _, err := a.wait(t); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("after a reset: %v", err)
	}
	// a step's decision ends its slots too
	b := g.send("w0", 3, 0, 1)
	b.pending(t)
	g.r.Finished(3)
	if _, err := b.wait(t); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("after the step was decided: %v", err)
	}
}

// A participant that is a member but never sends (it hangs, or cannot
// reach the coordinator) is left out of the step at the slot's deadline:
// the others go on, and the leader learns who it was.
func TestBNReduceDeadline(t *testing.T) {
	g := newBNRigDeadline(t, 150*time.Millisecond, "w0", "w1", "w2")
	start := time.Now()
	a := g.send("w0", 2, 0, 1)
	b := g.send("w2", 2, 0, 4)
	wantTotal(t, a, 2, 5)
	wantTotal(t, b, 2, 5)
	if el := time.Since(start); el < 140*time.Millisecond {
		t.Errorf("totalled after %v, before the deadline", el)
	}
	// the leader learns of it after the waiters are answered
	pollUntil(t, 5*time.Second, "the leader to learn who was left out", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.timedOut) > 0
	})
	g.mu.Lock()
	if !slices.Equal(g.timedOut, []string{"w1"}) {
		t.Errorf("left out %v, want [w1]", g.timedOut)
	}
	g.mu.Unlock()
	// the later slots of the step do not wait for it, and it is refused
	c0, c2 := g.send("w0", 2, 1, 1), g.send("w2", 2, 1, 2)
	wantTotal(t, c0, 2, 3)
	wantTotal(t, c2, 2, 3)
	if _, err := g.send("w1", 2, 1, 9).wait(t); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("the left-out worker: %v", err)
	}
	// the next step includes it again
	c := g.send("w1", 3, 0, 1)
	c.pending(t)
}
