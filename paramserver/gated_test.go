package paramserver

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

// testGate releases a push's tensors one at a time, from the last to the
// first, while the push runs; bad, if set, replaces one tensor's data, and
// fail makes that tensor never come.
type testGate struct {
	data    [][]float32
	ready   []chan struct{}
	failure error
}

func newTestGate(data [][]float32) *testGate {
	g := &testGate{data: data, ready: make([]chan struct{}, len(data))}
	for i := range g.ready {
		g.ready[i] = make(chan struct{})
	}
	return g
}

func (g *testGate) Tensor(ctx context.Context, t int) ([]float32, error) {
	select {
	case <-g.ready[t]:
		if g.failure != nil && g.data[t] == nil {
			return nil, g.failure
		}
		return g.data[t], nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// releaseBackwards releases every tensor, last first, with a pause between.
func (g *testGate) releaseBackwards() {
	for t := len(g.ready) - 1; t >= 0; t-- {
		time.Sleep(5 * time.Millisecond)
		close(g.ready[t])
	}
}

// A gated push, its tensors released last first while it runs, gives every
// server exactly what Push gives: the same weights after the step.
func TestPushGatedMatchesPush(t *testing.T) {
	run := func(gated bool) [][]float32 {
		c := startCluster(t, NewStaticMembers("w0"), syncConfigs(t, 2, nil)...)
		initCluster(t, c)
		cl := c.client(t, "w0")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for step := range int64(3) {
			g := grad(c.spec, 0, int(step))
			var err error
			if gated {
				gate := newTestGate(g)
				go gate.releaseBackwards()
				_, err = cl.PushGated(ctx, step, step, gate)
			} else {
				_, err = cl.Push(ctx, step, step, g)
			}
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
		into := zeros(c.spec)
		if _, err := cl.Pull(ctx, 3, into); err != nil {
			t.Fatal(err)
		}
		return into
	}
	want, got := run(false), run(true)
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("tensor %d differs after gated pushes", i)
		}
	}
}

// A tensor that turns out NaN, or never comes, after the other server's
// parts have all been sent: no server completes the push, nothing is
// applied, and the next push goes through.
func TestPushGatedRefusesWholePush(t *testing.T) {
	for _, c := range []struct {
		name string
		bad  func(g *testGate, t int)
		want error
	}{
		{"nan", func(g *testGate, t int) { g.data[t] = slices.Clone(g.data[t]); g.data[t][1] = float32(math.NaN()) }, wire.ErrNonFinite},
		{"step failed", func(g *testGate, t int) { g.data[t], g.failure = nil, errors.New("backprop failed") }, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := startCluster(t, NewStaticMembers("w0"), syncConfigs(t, 2, nil)...)
			init := initCluster(t, cl)
			w := cl.client(t, "w0")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// the first tensor lives on server 0 only; server 1's parts are
			// all released before it
			if p := cl.servers[0].Parts(); p[0].Tensor != 0 {
				t.Fatalf("server 0 starts with tensor %d", p[0].Tensor)
			}
			gate := newTestGate(grad(cl.spec, 0, 0))
			c.bad(gate, 0)
			go gate.releaseBackwards()
			_, err := w.PushGated(ctx, 0, 0, gate)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			for i := range cl.servers {
				if v := cl.status(t, i).Version; v != 0 {
					t.Errorf("server %d at version %d after a refused push", i, v)
				}
			}
			into := zeros(cl.spec)
			if _, err := w.Pull(ctx, 0, into); err != nil {
				t.Fatal(err)
			}
			for i := range init {
				if cl.spec[i].Kind == wire.Param && !slices.Equal(into[i], init[i]) {
					t.Errorf("tensor %d changed", i)
				}
			}
			if _, err := w.Push(ctx, 0, 0, grad(cl.spec, 0, 0)); err != nil {
				t.Errorf("the next push: %v", err)
			}
		})
	}
}
