package coordinator

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

// fakeSource is a workSource the test drives: offers come from next (nil:
// nothing to do), and wake is closed by poke.
type fakeSource struct {
	mu      sync.Mutex
	gen     uint64
	asks    []string
	counted []int64
	next    func(worker string, done int64) offer
	dones   []int64 // the done of every offer asked
	wake    chan struct{}
}

func newFakeSource(gen uint64) *fakeSource { return &fakeSource{gen: gen, wake: make(chan struct{})} }

func (f *fakeSource) generation() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen
}

func (f *fakeSource) asked(w string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asks = append(f.asks, w)
}

func (f *fakeSource) finished(_ string, step int64, _ float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counted = append(f.counted, step)
}

func (f *fakeSource) offer(w string, done int64) (offer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dones = append(f.dones, done)
	if f.next != nil {
		if o := f.next(w, done); o.over || o.ok || o.async {
			if o.wake == nil && !o.over && !o.ok {
				o.wake = f.wake
			}
			return o, nil
		}
	}
	return offer{wake: f.wake}, nil
}

func (f *fakeSource) poke(next func(string, int64) offer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next = next
	close(f.wake)
	f.wake = make(chan struct{})
}

func (f *fakeSource) counts() (asks int, finished []int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.asks), append([]int64(nil), f.counted...)
}

func ask(t *testing.T, w *workService, worker string, done int64, gen uint64) *wire.WorkReply {
	t.Helper()
	rep, err := w.Next(context.Background(), &wire.WorkRequest{RunID: "r", WorkerID: worker, Done: done, Gen: gen, Loss: 0.5})
	if err != nil {
		t.Fatalf("Next(%s, done %d): %v", worker, done, err)
	}
	return rep
}

// A worker's finished step counts once, and only in its generation; a
// worker with nothing to do is told to wait after the long poll.
func TestWorkServiceCountsEachStepOnce(t *testing.T) {
	src := newFakeSource(7)
	w := newWorkService("r", false, src, nil)
	w.poll = 20 * time.Millisecond
	for _, c := range []struct {
		done int64
		gen  uint64
	}{{3, 7}, {3, 7}, {2, 7}, {4, 99}, {4, 7}} {
		if rep := ask(t, w, "w1", c.done, c.gen); rep.Kind != wire.WorkWait || rep.Gen != 7 {
			t.Fatalf("reply %+v; want wait in generation 7", rep)
		}
	}
	asks, fin := src.counts()
	if asks != 5 || len(fin) != 2 || fin[0] != 3 || fin[1] != 4 {
		t.Errorf("asked %d times, steps counted %v; want 5, [3 4]", asks, fin)
	}
	if _, err := w.Next(context.Background(), &wire.WorkRequest{RunID: "other", WorkerID: "w1"}); err == nil {
		t.Error("a request of another run answered")
	}
}

// A long poll answers as soon as the source has a batch for the worker,
// with the generation current then; and "done" once the run is over.
func TestWorkServiceLongPoll(t *testing.T) {
	src := newFakeSource(1)
	w := newWorkService("r", false, src, nil)
	got := make(chan *wire.WorkReply, 1)
	go func() { got <- ask(t, w, "w1", -1, 1) }()
	pollUntil(t, 5*time.Second, "the long poll", func() bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		return len(src.dones) > 0
	})
	src.mu.Lock()
	src.gen = 2
	src.mu.Unlock()
	src.poke(func(worker string, _ int64) offer {
		return offer{ok: true, batch: Batch{Step: 5, Epoch: 1, Worker: worker, IDs: []uint64{8, 9}, Offset: 32}}
	})
	select {
	case rep := <-got:
		if rep.Kind != wire.WorkBatch || rep.Step != 5 || rep.Epoch != 1 || len(rep.IDs) != 2 || rep.Offset != 32 || rep.Gen != 2 {
			t.Errorf("reply %+v; want step 5's batch in generation 2", rep)
		}
	case <-time.After(time.Second):
		t.Fatal("the long poll did not answer when a batch came")
	}
	src.poke(func(string, int64) offer { return offer{over: true} })
	if rep := ask(t, w, "w1", 5, 2); rep.Kind != wire.WorkDone {
		t.Errorf("reply %+v; want done", rep)
	}
}

// In an async epoch the finished step is reported once (the source sees
// it, then -1); an SSP worker with nothing to do is told to wait at once
// after a report, so that it tells the servers it is idle.
func TestWorkServiceAsync(t *testing.T) {
	src := newFakeSource(1)
	src.next = func(string, int64) offer { return offer{async: true} }
	w := newWorkService("r", false, src, nil)
	w.poll = 50 * time.Millisecond
	ask(t, w, "w1", 3, 1)
	src.mu.Lock()
	dones := append([]int64(nil), src.dones...)
	src.dones = nil
	src.mu.Unlock()
	if len(dones) < 1 || dones[0] != 3 {
		t.Fatalf("offers asked with %v; want 3 first", dones)
	}
	for _, d := range dones[1:] {
		if d != -1 {
			t.Fatalf("offers asked with %v; want -1 after the first", dones)
		}
	}
	ssp := newWorkService("r", true, src, nil)
	ssp.poll = time.Hour
	start := time.Now()
	if rep := ask(t, ssp, "w1", 4, 1); rep.Kind != wire.WorkWait || time.Since(start) > 10*time.Second {
		t.Errorf("ssp reply %+v after %v; want wait at once", rep, time.Since(start))
	}
}
