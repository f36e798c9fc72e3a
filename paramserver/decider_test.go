package paramserver

import (
	"context"
	"errors"
	"github.com/tailorml/tailor/internal/job"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

// fakeDecider answers with decide(step, complete) once it says ok; until
// then a call waits for its context, as the coordinator's long-poll does.
type fakeDecider struct {
	mu     sync.Mutex
	calls  [][]string
	fail   int // fail this many calls first
	decide func(step int64, complete []string) (wire.Decision, bool)
}

func (f *fakeDecider) Decide(ctx context.Context, step int64, complete []string) (wire.Decision, error) {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(complete))
	failing := f.fail > 0
	if failing {
		f.fail--
	}
	decide := f.decide
	f.mu.Unlock()
	if failing {
		return wire.Decision{}, errors.New("coordinator unreachable")
	}
	if d, ok := decide(step, complete); ok {
		return d, nil
	}
	<-ctx.Done()
	return wire.Decision{}, ctx.Err()
}

func (f *fakeDecider) callsSeen() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func pushAll(t *testing.T, c *psCluster, ctx context.Context, step int64, ws ...int) []error {
	t.Helper()
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		cl := c.client(t, workerID(w))
		wg.Go(func() { _, errs[i] = cl.Push(ctx, step, step, grad(c.spec, w, int(step))) })
	}
	wg.Wait()
	return errs
}

// With a Decider the server applies exactly the decided set, summed in the
// decision's order, after reporting sorted, growing complete sets; a
// failing Decider is retried.
func TestDeciderAppliesDecision(t *testing.T) {
	order := []string{"w2", "w0", "w1"} // rank order, not id order
	dec := &fakeDecider{fail: 2, decide: func(step int64, complete []string) (wire.Decision, bool) {
		return wire.Decision{Step: step, Included: order}, len(complete) == 3
	}}
	cfgs := syncConfigs(t, 1, func(c *Config) { c.Decider = dec })
	c := startCluster(t, NewStaticMembers("w0", "w1", "w2"), cfgs...)
	init := initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for w, err := range pushAll(t, c, ctx, 0, 0, 1, 2) {
		if err != nil {
			t.Fatalf("push of w%d: %v", w, err)
		}
	}
	ref := newReference(t, cfgs[0], init)
	ref.step(t, grad(c.spec, 2, 0), grad(c.spec, 0, 0), grad(c.spec, 1, 0))
	into := zeros(c.spec)
	if v, err := c.client(t, "w0").Pull(ctx, 1, into); err != nil || v != 1 {
		t.Fatalf("pull: version %d, %v", v, err)
	}
	sameBits(t, c.spec, into, ref.weights)
	calls := dec.callsSeen()
	last := calls[len(calls)-1]
	if !slices.Equal(last, []string{"w0", "w1", "w2"}) {
		t.Errorf("last report %v, want [w0 w1 w2]", last)
	}
	for i, call := range calls {
		if !slices.IsSorted(call) || len(call) == 0 || (i > 0 && len(call) < len(calls[i-1])) {
			t.Errorf("reports %v: want sorted, non-empty, never shrinking", calls)
			break
		}
	}
	if st := c.status(t, 0); st.Version != 1 || st.Missing != 0 || st.Accepted != 4 {
		t.Errorf("version %d, missing %d, accepted %d; want 1, 0, 4", st.Version, st.Missing, st.Accepted)
	}
}

// A worker the decision leaves out is answered ReasonLate and its gradient
// dropped; the excluded count as missing.
func TestDeciderLate(t *testing.T) {
	dec := &fakeDecider{decide: func(step int64, complete []string) (wire.Decision, bool) {
		return wire.Decision{Step: step, Included: []string{"w0", "w1"}, Excluded: []string{"w2"}}, len(complete) == 3
	}}
	cfgs := syncConfigs(t, 1, func(c *Config) { c.Decider = dec })
	c := startCluster(t, NewStaticMembers("w0", "w1", "w2"), cfgs...)
	init := initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := pushAll(t, c, ctx, 0, 0, 1, 2)
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("included pushes: %v", errs)
	}
	if re := (*wire.RejectedError)(nil); !errors.As(errs[2], &re) || re.Reason != wire.ReasonLate || re.Version != 1 {
		t.Errorf("late push: got %v, want %s at version 1", errs[2], wire.ReasonLate)
	}
	ref := newReference(t, cfgs[0], init)
	ref.step(t, grad(c.spec, 0, 0), grad(c.spec, 1, 0))
	into := zeros(c.spec)
	if _, err := c.client(t, "w0").Pull(ctx, 1, into); err != nil {
		t.Fatal(err)
	}
	sameBits(t, c.spec, into, ref.weights)
	if st := c.status(t, 0); st.Missing != 1 || rejected(st, wire.ReasonLate) != 1 || st.Pending != 0 {
		t.Errorf("missing %d, late %d, pending %d; want 1, 1, 0", st.Missing, rejected(st, wire.ReasonLate), st.Pending)
	}
}

// An empty decision (nobody's gradient is complete everywhere by the
// deadline) moves the version on without changing a weight; every pusher
// is late.
func TestDeciderEmptyStep(t *testing.T) {
	dec := &fakeDecider{decide: func(step int64, complete []string) (wire.Decision, bool) {
		return wire.Decision{Step: step, Excluded: []string{"w0", "w1"}}, len(complete) == 2
	}}
	cfgs := syncConfigs(t, 1, func(c *Config) { c.Decider = dec })
	c := startCluster(t, NewStaticMembers("w0", "w1"), cfgs...)
	init := initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := pushAll(t, c, ctx, 0, 0, 1)
	for i, err := range errs {
		if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != wire.ReasonLate || re.Version != 1 {
			t.Errorf("push of w%d: got %v, want %s at version 1", i, err, wire.ReasonLate)
		}
	}
	into := zeros(c.spec)
	if _, err := c.client(t, "w0").Pull(ctx, 1, into); err != nil {
		t.Fatal(err)
	}
	ref := newReference(t, cfgs[0], init)
	sameBits(t, c.spec, into, ref.weights)
	if st := c.status(t, 0); st.Version != 1 || st.Missing != 2 || st.Pending != 0 {
		t.Errorf("version %d, missing %d, pending %d; want 1, 2, 0", st.Version, st.Missing, st.Pending)
	}
	// the next step applies as usual
	dec.mu.Lock()
	dec.decide = func(step int64, complete []string) (wire.Decision, bool) {
		return wire.Decision{Step: step, Included: []string{"w0", "w1"}}, len(complete) == 2
	}
	dec.mu.Unlock()
	if errs := pushAll(t, c, ctx, 1, 0, 1); errs[0] != nil || errs[1] != nil {
		t.Fatalf("step 1: %v", errs)
	}
	ref.step(t, grad(c.spec, 0, 1), grad(c.spec, 1, 1))
	if _, err := c.client(t, "w0").Pull(ctx, 2, into); err != nil {
		t.Fatal(err)
	}
	sameBits(t, c.spec, into, ref.weights)
}

// A decision naming a gradient the server does not hold is a protocol
// error: nothing is applied, the server says why and refuses pushes.
func TestDeciderInconsistent(t *testing.T) {
	dec := &fakeDecider{decide: func(step int64, complete []string) (wire.Decision, bool) {
		return wire.Decision{Step: step, Included: []string{"w0", "w1"}}, true // w1 never pushed
	}}
	cfgs := syncConfigs(t, 1, func(c *Config) { c.Decider = dec })
	c := startCluster(t, NewStaticMembers("w0", "w1"), cfgs...)
	init := initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.client(t, "w0").Push(ctx, 0, 0, grad(c.spec, 0, 0))
	if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != wire.ReasonInconsistent {
		t.Errorf("push: got %v, want %s", err, wire.ReasonInconsistent)
	}
	if err := c.servers[0].Err(); !errors.Is(err, ErrDecision) {
		t.Errorf("Err() = %v, want ErrDecision", err)
	}
	_, err = c.client(t, "w1").Push(ctx, 0, 0, grad(c.spec, 1, 0))
	if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != wire.ReasonInconsistent {
		t.Errorf("push after the failure: got %v, want %s", err, wire.ReasonInconsistent)
	}
	if v := c.servers[0].Version(); v != 0 {
		t.Errorf("version %d, want 0", v)
	}
	into := zeros(c.spec)
	if _, err := c.client(t, "w0").Pull(ctx, 0, into); err != nil {
		t.Fatal(err)
	}
	sameBits(t, c.spec, into, init)
	if n := c.servers[0].m.decisionErrors.Load(); n != 1 {
		t.Errorf("decision errors %d, want 1", n)
	}
}

func TestDeciderConfig(t *testing.T) {
	d := &fakeDecider{}
	for _, edit := range []func(*Config){
		func(c *Config) { c.Mode = job.ModeAsync },
		func(c *Config) { c.Mode = job.ModeSSP },
		func(c *Config) { c.SyncQuorum = 2 },
	} {
		cfg := testConfig(t, job.ModeSync, 1, 0)
		cfg.Decider = d
		edit(&cfg)
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("mode %s, quorum %d with a decider: got %v, want ErrConfig", cfg.Mode, cfg.SyncQuorum, err)
		}
	}
}
