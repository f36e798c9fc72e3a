package paramserver

import (
	"context"
	"errors"
	"github.com/tailorml/tailor/internal/job"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

// Every push of two concurrent workers is applied exactly once; a retried
// push is refused as a duplicate.
func TestAsyncAppliesEveryPushOnce(t *testing.T) {
	const workers, steps = 2, 5
	c := startCluster(t, NewStaticMembers("w0", "w1"), testConfig(t, job.ModeAsync, 2, 0), testConfig(t, job.ModeAsync, 2, 1))
	initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	clients := []*wire.Client{c.client(t, "w0"), c.client(t, "w1")}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			into := zeros(c.spec)
			for step := range int64(steps) {
				v, err := clients[w].Pull(ctx, 0, into)
				if err == nil {
					_, err = clients[w].Push(ctx, step, v, grad(c.spec, w, int(step)))
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	_, err := clients[0].Push(ctx, steps-1, 0, grad(c.spec, 0, steps-1))
	if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != wire.ReasonDuplicate {
		t.Errorf("retried push: got %v, want %s", err, wire.ReasonDuplicate)
	}
	for i := range c.servers {
		st := c.status(t, i)
		if st.Version != workers*steps || st.Steps != workers*steps || st.Accepted != workers*steps+1 {
			t.Errorf("server %d: version %d, steps %d, accepted %d; want %d, %d, %d", i, st.Version, st.Steps, st.Accepted, workers*steps, workers*steps, workers*steps+1)
		}
	}
}

// One async worker is the single-process trainer: one Adam step per push,
// State tensors take the pushed values.
func TestAsyncSingleWorkerMatchesReference(t *testing.T) {
	cfg := testConfig(t, job.ModeAsync, 1, 0)
	c := startCluster(t, NewStaticMembers("w0"), cfg)
	init := initCluster(t, c)
	ref := newReference(t, cfg, init)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := c.client(t, "w0")
	into := zeros(c.spec)
	for step := range int64(4) {
		g := grad(c.spec, 0, int(step))
		if _, err := cl.Push(ctx, step, step, g); err != nil {
			t.Fatal(err)
		}
		ref.step(t, g)
		if v, err := cl.Pull(ctx, step+1, into); err != nil || v != step+1 {
			t.Fatalf("pull: version %d, %v", v, err)
		}
		sameBits(t, c.spec, into, ref.weights)
	}
}

// SSP with bound 1: the fast worker's push is held while it is more than
// one step ahead of the slow one, goes through when the slow one advances,
// and also when the slow one leaves the membership.
func TestSSPBound(t *testing.T) {
	members := NewStaticMembers("fast", "slow")
	cfg := testConfig(t, job.ModeSSP, 1, 0)
	cfg.Staleness = 1
	c := startCluster(t, members, cfg)
	initCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fast, slow := c.client(t, "fast"), c.client(t, "slow")
	push := func(cl *wire.Client, step int64) error {
		_, err := cl.Push(ctx, step, 0, grad(c.spec, 0, int(step)))
		return err
	}
	mustPush := func(cl *wire.Client, step int64) {
		t.Helper()
		if err := push(cl, step); err != nil {
			t.Fatalf("push %d: %v", step, err)
		}
	}
	held := func(step int64) <-chan error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- push(fast, step) }()
		eventually(t, 5*time.Second, "a held push", func() bool { return c.status(t, 0).Pending == 1 })
		select {
		case err := <-done:
			t.Fatalf("push %d went through (%v) while out of bound", step, err)
		case <-time.After(50 * time.Millisecond):
		}
		return done
	}
	released := func(done <-chan error, why string) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("held push after %s: %v", why, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("held push still held after %s", why)
		}
	}

	mustPush(slow, 0) // slow is on step 1
	for s := range int64(3) {
		mustPush(fast, s) // steps 0, 1, 2 ≤ 1 + 1
	}
	done := held(3) // 3 > 1 + 1
	mustPush(slow, 1)
	released(done, "the slow worker advanced")

	// a worker without a batch says so and stops holding the others back
	done = held(4)
	if err := slow.Idle(ctx, 2); err != nil {
		t.Fatal(err)
	}
	released(done, "the slow worker went idle")
	// back from idle two steps behind: it holds the fast one again until
	// it has caught up to within the bound
	mustPush(slow, 2) // slow is on step 3, fast on 5
	done = held(5)
	mustPush(slow, 3)
	released(done, "the slow worker caught up")

	done = held(6)
	members.Set("fast")
	released(done, "the slow worker left")

	if st := c.status(t, 0); st.Version != 11 || st.Pending != 0 {
		t.Errorf("version %d, held %d; want 11, 0", st.Version, st.Pending)
	}
	// only members may go idle, only in their own run
	var re *wire.RejectedError
	if err := slow.Idle(ctx, 4); !errors.As(err, &re) || re.Reason != wire.ReasonUnknownWorker {
		t.Errorf("idle of a departed worker: got %v, want %s", err, wire.ReasonUnknownWorker)
	}
}
