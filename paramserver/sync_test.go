package paramserver

import (
	"context"
	"errors"
	"fmt"
	"github.com/tailorml/tailor/internal/job"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

func syncConfigs(tb testing.TB, servers int, edit func(*Config)) []Config {
	cfgs := make([]Config, servers)
	for i := range cfgs {
		cfgs[i] = testConfig(tb, job.ModeSync, servers, i)
		if edit != nil {
			edit(&cfgs[i])
		}
	}
	return cfgs
}

func initCluster(tb testing.TB, c *psCluster) [][]float32 {
	tb.Helper()
	init := tensors(c.spec, 42)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.client(tb, "coordinator").Init(ctx, init); err != nil {
		tb.Fatal(err)
	}
	return init
}

// Three workers push in random order with random delays; every worker
// ends with exactly the single-process result of Adam on the worker-id
// ordered average — on one server and on two that split a tensor, also
// with L2 and AdamW weight decay on the kernels (one of them split).
func TestSyncMatchesReference(t *testing.T) {
	const workers, steps = 3, 4
	type variant struct {
		name string
		edit func(*Config)
	}
	plain := variant{"plain", nil}
	l2 := variant{"l2", func(c *Config) { c.Adam.L2 = 0.01 }}
	adamw := variant{"adamw", func(c *Config) { c.Adam.WeightDecay = 0.5; c.Adam.L2 = 0.001 }}
	for _, servers := range []int{1, 2} {
		for trial, v := range []variant{plain, plain, l2, adamw} {
			if servers == 1 && v.edit != nil {
				continue
			}
			t.Run(fmt.Sprintf("P=%d/trial=%d/%s", servers, trial, v.name), func(t *testing.T) {
				members := NewStaticMembers("w0", "w1", "w2")
				cfgs := syncConfigs(t, servers, v.edit)
				c := startCluster(t, members, cfgs...)
				if servers == 2 {
					split := 0
					for _, p := range c.servers[0].Plan().Parts {
						if p.Name == "dense/w" {
							split++
						}
					}
					if split != 2 {
						t.Fatalf("dense/w in %d parts on 2 servers, want 2", split)
					}
				}
				init := initCluster(t, c)
				ref := newReference(t, cfgs[0], init)
				for step := range steps {
					ref.step(t, grad(c.spec, 0, step), grad(c.spec, 1, step), grad(c.spec, 2, step))
				}

				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				clients := make([]*wire.Client, workers)
				for w := range clients {
					clients[w] = c.client(t, workerID(w))
				}
				results := make([][][]float32, workers)
				errs := make([]error, workers)
				var wg sync.WaitGroup
				for w := range workers {
					wg.Go(func() {
						r := rand.New(rand.NewPCG(uint64(trial), uint64(w)))
						into := zeros(c.spec)
						for step := range int64(steps) {
							if v, err := clients[w].Pull(ctx, step, into); err != nil || v != step {
								errs[w] = fmt.Errorf("pull %d: version %d, %v", step, v, err)
								return
							}
							time.Sleep(time.Duration(r.IntN(15)) * time.Millisecond)
							if _, err := clients[w].Push(ctx, step, step, grad(c.spec, w, int(step))); err != nil {
								errs[w] = fmt.Errorf("push %d: %w", step, err)
								return
							}
						}
						if _, err := clients[w].Pull(ctx, steps, into); err != nil {
							errs[w] = err
						}
						results[w] = into
					})
				}
				wg.Wait()
				for w, err := range errs {
					if err != nil {
						t.Fatalf("worker %d: %v", w, err)
					}
				}
				for w := range workers {
					sameBits(t, c.spec, results[w], ref.weights)
				}
				for i := range servers {
					st := c.status(t, i)
					if st.Version != steps || st.Steps != steps || st.Accepted != workers*steps+1 || st.Missing != 0 {
						t.Errorf("server %d: version %d, steps %d, accepted %d, missing %d; want %d, %d, %d, 0",
							i, st.Version, st.Steps, st.Accepted, st.Missing, steps, steps, workers*steps+1)
					}
				}
			})
		}
	}
}

// Each server's optimizer has one tensor per Param part it holds, a kernel
// exactly when the part is of a kernel tensor (the "w"s of testSpec), also
// when a kernel is split across servers.
func TestServerKernels(t *testing.T) {
	for _, servers := range []int{1, 2} {
		for i, cfg := range syncConfigs(t, servers, nil) {
			s, err := New(cfg, NewStaticMembers("w0"))
			if err != nil {
				t.Fatal(err)
			}
			var want []bool
			for _, p := range s.Parts() {
				if p.Kind == wire.Param {
					want = append(want, strings.HasSuffix(p.Name, "/w"))
				}
			}
			if got := s.adam.Kernels(); !slices.Equal(got, want) || !slices.Contains(got, true) {
				t.Errorf("server %d of %d: kernels %v, want %v", i, servers, got, want)
			}
			s.Close()
		}
	}
}

// A worker that leaves mid-step does not hold the step: it completes with
// the gradients that arrived, averaged over those.
func TestSyncWorkerLeaves(t *testing.T) {
	members := NewStaticMembers("w0", "w1", "w2")
	cfgs := syncConfigs(t, 1, nil)
	c := startCluster(t, members, cfgs...)
	init := initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for w := range 2 {
		if _, err := c.client(t, workerID(w)).Push(ctx, 0, 0, grad(c.spec, w, 0)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "two pending gradients", func() bool { return c.status(t, 0).Pending == 2 })
	if v := c.servers[0].Version(); v != 0 {
		t.Fatalf("step applied without w2: version %d", v)
	}
	members.Set("w0", "w1")
	into := zeros(c.spec)
	if v, err := c.client(t, "w0").Pull(ctx, 1, into); err != nil || v != 1 {
		t.Fatalf("pull after w2 left: version %d, %v", v, err)
	}
	ref := newReference(t, cfgs[0], init)
	ref.step(t, grad(c.spec, 0, 0), grad(c.spec, 1, 0))
	sameBits(t, c.spec, into, ref.weights)
	if st := c.status(t, 0); st.Missing != 1 {
		t.Errorf("missing %d, want 1", st.Missing)
	}
	_, err := c.client(t, "w2").Push(ctx, 1, 1, grad(c.spec, 2, 1))
	if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != wire.ReasonUnknownWorker {
		t.Errorf("push of departed w2: got %v, want %s", err, wire.ReasonUnknownWorker)
	}
}

// With a silent member, the step completes at the deadline; the late
// gradient is refused as stale.
func TestSyncDeadline(t *testing.T) {
	const deadline = 300 * time.Millisecond
	members := NewStaticMembers("w0", "w1", "w2")
	cfgs := syncConfigs(t, 1, func(c *Config) { c.StepDeadline = deadline })
	c := startCluster(t, members, cfgs...)
	init := initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	for w := range 2 {
		if _, err := c.client(t, workerID(w)).Push(ctx, 0, 0, grad(c.spec, w, 0)); err != nil {
			t.Fatal(err)
		}
	}
	into := zeros(c.spec)
	if v, err := c.client(t, "w0").Pull(ctx, 1, into); err != nil || v != 1 {
		t.Fatalf("pull: version %d, %v", v, err)
	}
	if el := time.Since(start); el < deadline*9/10 {
		t.Errorf("step applied after %v, before the %v deadline", el, deadline)
	}
	ref := newReference(t, cfgs[0], init)
	ref.step(t, grad(c.spec, 0, 0), grad(c.spec, 1, 0))
	sameBits(t, c.spec, into, ref.weights)
	_, err := c.client(t, "w2").Push(ctx, 0, 0, grad(c.spec, 2, 0))
	if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != wire.ReasonStale {
		t.Errorf("late push: got %v, want %s", err, wire.ReasonStale)
	}
	st := c.status(t, 0)
	if st.Missing != 1 || rejected(st, wire.ReasonStale) != 1 {
		t.Errorf("missing %d, stale %d; want 1, 1", st.Missing, rejected(st, wire.ReasonStale))
	}
}

// With SyncQuorum 2 of 3, the step goes at the second gradient.
func TestSyncQuorum(t *testing.T) {
	members := NewStaticMembers("w0", "w1", "w2")
	cfgs := syncConfigs(t, 1, func(c *Config) { c.SyncQuorum = 2 })
	c := startCluster(t, members, cfgs...)
	init := initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, w := range []int{2, 0} {
		if _, err := c.client(t, workerID(w)).Push(ctx, 0, 0, grad(c.spec, w, 0)); err != nil {
			t.Fatal(err)
		}
	}
	into := zeros(c.spec)
	if v, err := c.client(t, "w1").Pull(ctx, 1, into); err != nil || v != 1 {
		t.Fatalf("pull: version %d, %v", v, err)
	}
	ref := newReference(t, cfgs[0], init)
	ref.step(t, grad(c.spec, 0, 0), grad(c.spec, 2, 0))
	sameBits(t, c.spec, into, ref.weights)
	_, err := c.client(t, "w1").Push(ctx, 0, 0, grad(c.spec, 1, 0))
	if !errors.Is(err, wire.ErrRejected) {
		t.Errorf("third push: got %v, want a rejection", err)
	}
	if st := c.status(t, 0); st.Missing != 1 || rejected(st, wire.ReasonStale) != 1 {
		t.Errorf("missing %d, stale %d; want 1, 1", st.Missing, rejected(st, wire.ReasonStale))
	}
}

// A pull for a version that never comes ends with its context.
func TestPullWaitsWithContext(t *testing.T) {
	c := startCluster(t, NewStaticMembers("w0"), syncConfigs(t, 1, nil)...)
	initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.client(t, "w0").Pull(ctx, 5, zeros(c.spec)); err == nil {
		t.Fatal("pull of a future version returned")
	}
}

// With StepLR, a step applied with fewer gradients than the run was
// scaled for updates with the learning rate times StepLR(n): here 2 of 3
// workers (quorum 2), at 2/3 of the rate.
func TestSyncStepLR(t *testing.T) {
	members := NewStaticMembers("w0", "w1", "w2")
	calls := make(chan int, 4)
	cfgs := syncConfigs(t, 1, func(c *Config) {
		c.SyncQuorum = 2
		c.StepLR = func(n int) float64 { calls <- n; return float64(n) / 3 }
	})
	c := startCluster(t, members, cfgs...)
	init := initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, w := range []int{1, 0} {
		if _, err := c.client(t, workerID(w)).Push(ctx, 0, 0, grad(c.spec, w, 0)); err != nil {
			t.Fatal(err)
		}
	}
	into := zeros(c.spec)
	if v, err := c.client(t, "w2").Pull(ctx, 1, into); err != nil || v != 1 {
		t.Fatalf("pull: version %d, %v", v, err)
	}
	if n := <-calls; n != 2 {
		t.Errorf("StepLR(%d), want StepLR(2)", n)
	}
	ref := newReference(t, cfgs[0], init)
	ref.stepScaled(t, 2.0/3, grad(c.spec, 0, 0), grad(c.spec, 1, 0))
	sameBits(t, c.spec, into, ref.weights)
	// the unscaled step differs: the factor is applied
	plain := newReference(t, cfgs[0], init)
	plain.step(t, grad(c.spec, 0, 0), grad(c.spec, 1, 0))
	differ := false
	for i := range plain.weights {
		if !slices.Equal(plain.weights[i], ref.weights[i]) {
			differ = true
		}
	}
	if !differ {
		t.Error("the scaled and unscaled steps give the same weights")
	}
}
