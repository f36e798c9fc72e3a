package serve

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Jobs queued while the batch goroutine is busy are gathered into one
// batch, up to the largest batch; a job prepared for another model starts
// a batch of its own.
func TestBatcherGathers(t *testing.T) {
	a, b := testModel(t, 1), testModel(t, 2)
	for _, m := range []*Model{a, b} {
		if err := m.prepare(4); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var sizes []int
	bt := newBatcher(4, 0, 16, func(n int, _ time.Duration) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	})
	// queue before the loop starts: A1 A1 A2 B1 A1 A1 A1
	plan := []struct {
		m *Model
		n int
	}{{a, 1}, {a, 1}, {a, 2}, {b, 1}, {a, 1}, {a, 1}, {a, 1}}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, len(plan))
	for i, p := range plan {
		x := make([]float32, p.n*p.m.inputLen())
		for k := range x {
			x[k] = float32((k+i)%13) / 7
		}
		j := &job{model: p.m, x: x, n: p.n}
		wg.Add(1)
		go func() {
			defer wg.Done()
			probs, err := bt.submit(ctx, j)
			if err == nil && len(probs) != p.n*p.m.labels {
				err = fmt.Errorf("%d probabilities for %d images", len(probs), p.n)
			}
			if err == nil {
				want := make([]float32, p.n*p.m.labels)
				ref := testModel(t, map[*Model]uint64{a: 1, b: 2}[p.m])
				if err := ref.prepare(1); err != nil {
					errs <- err
					return
				}
				for k := range p.n {
					if err := ref.Bundle.Net.Predict(x[k*ref.inputLen():(k+1)*ref.inputLen()], 1, want[k*ref.labels:(k+1)*ref.labels]); err != nil {
						errs <- err
						return
					}
				}
				err = closeTo(probs, want, 1e-5)
			}
			if err != nil {
				errs <- fmt.Errorf("job %d: %w", i, err)
			}
		}()
		waitFor(t, 5*time.Second, "job queued", func() bool { return len(bt.queue) == i+1 })
	}
	lctx, stop := context.WithCancel(ctx)
	bt.start(lctx)
	wg.Wait()
	stop()
	bt.wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A1 A1 A2 (4 images), then B1 alone, then A1 A1 A1
	if got, want := fmt.Sprint(sizes), "[4 1 3]"; got != want {
		t.Errorf("batch sizes %s, want %s", got, want)
	}
}

// A batch waits up to the delay for requests still being decoded, and not
// at all when none are.
func TestBatcherDelay(t *testing.T) {
	m := testModel(t, 1)
	if err := m.prepare(8); err != nil {
		t.Fatal(err)
	}
	sizes := make(chan int, 8)
	bt := newBatcher(8, 500*time.Millisecond, 16, func(n int, _ time.Duration) { sizes <- n })
	ctx, stop := context.WithCancel(context.Background())
	defer func() { stop(); bt.wait() }()
	bt.start(ctx)
	one := func() *job { return &job{model: m, x: make([]float32, m.inputLen()), n: 1} }

	// nothing else on its way: runs at once, well within the delay
	t0 := time.Now()
	if _, err := bt.submit(ctx, one()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 400*time.Millisecond {
		t.Errorf("a lone request took %s", d)
	}
	if n := <-sizes; n != 1 {
		t.Errorf("lone batch of %d", n)
	}
	// one on its way: the batch waits for it
	bt.decoding.Add(1)
	first := one()
	first.ctx, first.done = ctx, make(chan result, 1)
	bt.queue <- first
	waitFor(t, 5*time.Second, "first job taken", func() bool { return len(bt.queue) == 0 })
	if _, err := bt.submit(ctx, one()); err != nil {
		t.Fatal(err)
	}
	bt.decoding.Add(-1)
	if r := <-first.done; r.err != nil {
		t.Fatal(r.err)
	}
	if n := <-sizes; n != 2 {
		t.Errorf("batch of %d, want the 2 requests together", n)
	}
}

// A job whose caller has gone is skipped; a stopped batcher answers
// what is queued.
func TestBatcherSkipsAndStops(t *testing.T) {
	m := testModel(t, 1)
	if err := m.prepare(4); err != nil {
		t.Fatal(err)
	}
	ran := 0
	bt := newBatcher(4, 0, 4, func(n int, _ time.Duration) { ran += n })
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	j := &job{ctx: gone, model: m, x: make([]float32, m.inputLen()), n: 1, done: make(chan result, 1)}
	bt.queue <- j
	j2 := &job{ctx: context.Background(), model: m, x: make([]float32, m.inputLen()), n: 1, done: make(chan result, 1)}
	bt.queue <- j2
	ctx, stop := context.WithCancel(context.Background())
	bt.start(ctx)
	if r := <-j.done; r.err == nil {
		t.Error("a cancelled job ran")
	}
	if r := <-j2.done; r.err != nil {
		t.Errorf("live job: %v", r.err)
	}
	stop()
	bt.wait()
	if ran != 1 {
		t.Errorf("%d images run, want 1", ran)
	}
	j3 := &job{ctx: context.Background(), model: m, x: make([]float32, m.inputLen()), n: 1, done: make(chan result, 1)}
	bt.queue <- j3
	bt.drain(errStopped)
	if r := <-j3.done; r.err != errStopped {
		t.Errorf("after stop: %v, want errStopped", r.err)
	}
}

// Clients that send again when answered come back: a batch waits (up to
// the delay) for as many images as the previous batch found in flight, so
// a steady load stays in full batches instead of alternating halves; once
// the load is gone, a lone request waits the delay once, then runs at once.
func TestBatcherExpectsReturningClients(t *testing.T) {
	m := testModel(t, 1)
	if err := m.prepare(8); err != nil {
		t.Fatal(err)
	}
	sizes := make(chan int, 16)
	const delay = 300 * time.Millisecond
	bt := newBatcher(8, delay, 16, func(n int, _ time.Duration) { sizes <- n })
	ctx, stop := context.WithCancel(context.Background())
	defer func() { stop(); bt.wait() }()
	one := func() *job {
		return &job{ctx: ctx, model: m, x: make([]float32, m.inputLen()), n: 1, done: make(chan result, 1)}
	}
	first := make([]*job, 8)
	for i := range first {
		first[i] = one()
		bt.queue <- first[i]
	}
	bt.start(ctx)
	for _, j := range first {
		if r := <-j.done; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if n := <-sizes; n != 8 {
		t.Fatalf("first batch of %d, want 8", n)
	}
	// half come back at once, half 50 ms later: one batch of 8
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i >= 4 {
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := bt.submit(ctx, one()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := <-sizes; n != 8 {
		t.Errorf("second batch of %d, want the 8 returning requests together", n)
	}
	// the load is gone: the first lone request waits for the 8 that do not come
	t0 := time.Now()
	if _, err := bt.submit(ctx, one()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < delay {
		t.Errorf("first lone request after a batch of 8 answered in %s, want the delay %s", d, delay)
	}
	if n := <-sizes; n != 1 {
		t.Errorf("lone batch of %d", n)
	}
	t0 = time.Now()
	if _, err := bt.submit(ctx, one()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d >= delay {
		t.Errorf("second lone request took %s, want no wait", d)
	}
	<-sizes
}
