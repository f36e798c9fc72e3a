package serve

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// job is one request's images, prepared (decoded, resized, normalised) for
// one model: it must run on that model, whatever the server serves by then.
type job struct {
	ctx   context.Context
	model *Model
	x     []float32 // n·inputLen floats, NCHW
	n     int
	done  chan result // buffered: the batch goroutine never blocks on it
}

type result struct {
	probs []float32 // n·labels
	err   error
}

// batcher gathers jobs into batches and runs them, one batch at a time, on
// its own goroutine: the only one that runs a published model's net. Its
// owner starts it with run and stops it by cancelling run's context after
// the HTTP server has finished every request.
type batcher struct {
	maxBatch int
	maxDelay time.Duration
	queue    chan *job
	// decoding counts requests admitted but not yet queued (being read and
	// decoded): a batch waits (at most maxDelay) for more only while some
	// are on their way.
	decoding atomic.Int64
	observe  func(images int, d time.Duration)

	wg sync.WaitGroup
}

func newBatcher(maxBatch int, maxDelay time.Duration, depth int, observe func(int, time.Duration)) *batcher {
	return &batcher{maxBatch: maxBatch, maxDelay: maxDelay, queue: make(chan *job, depth), observe: observe}
}

var errStopped = errors.New("serve: shutting down")

// submit queues j and waits for its result or for ctx to end. The queue has
// room for every admitted request, so it blocks only if the batch goroutine
// has stopped.
func (b *batcher) submit(ctx context.Context, j *job) ([]float32, error) {
	j.ctx, j.done = ctx, make(chan result, 1)
	select {
	case b.queue <- j:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-j.done:
		return r.probs, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// start runs the batch loop until ctx ends; wait waits for it.
func (b *batcher) start(ctx context.Context) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.loop(ctx)
	}()
}

func (b *batcher) wait() { b.wg.Wait() }

func (b *batcher) loop(ctx context.Context) {
	var carry *job // the first job of the next batch (prepared for another model)
	// expect is how many images the previous batch found in flight: its
	// own, those queued behind it and those being decoded when it closed.
	// Clients that send their next request when answered (most do) come
	// back, so a batch waits (at most maxDelay) until it has that many;
	// without it, 32 such clients settle into two alternating halves of
	// 16, one decoded while the other runs. One client alone: 1, no wait.
	expect := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-b.queue:
			case <-ctx.Done():
				b.drain(errStopped)
				return
			}
		}
		batch, n := []*job{first}, first.n
		deadline := time.Now().Add(b.maxDelay)
	gather:
		for n < b.maxBatch {
			var j *job
			select {
			case j = <-b.queue:
			default:
				wait := time.Until(deadline)
				if (b.decoding.Load() == 0 && n >= expect) || wait <= 0 {
					break gather
				}
				// (Go ≥ 1.23 timers: Stop and Reset leave no stale tick)
				timer.Reset(wait)
				select {
				case j = <-b.queue:
					timer.Stop()
				case <-timer.C:
					continue // look at the queue once more, then stop
				case <-ctx.Done():
					timer.Stop()
					break gather
				}
			}
			if j.model != first.model {
				carry = j
				break gather
			}
			batch = append(batch, j)
			n += j.n
		}
		expect = min(b.maxBatch, n+int(b.decoding.Load())+len(b.queue))
		b.runBatch(batch)
	}
}

// drain answers every queued job with err.
func (b *batcher) drain(err error) {
	for {
		select {
		case j := <-b.queue:
			j.done <- result{err: err}
		default:
			return
		}
	}
}

// runBatch runs the live jobs of batch (all prepared for one model) as one
// batch and hands each its probabilities.
func (b *batcher) runBatch(batch []*job) {
	live := batch[:0]
	n := 0
	for _, j := range batch {
		if err := j.ctx.Err(); err != nil {
			j.done <- result{err: err} // its caller has gone: skip the work
			continue
		}
		live = append(live, j)
		n += j.n
	}
	if n == 0 {
		return
	}
	m := live[0].model
	il, l := m.inputLen(), m.labels
	x := live[0].x
	if len(live) > 1 {
		x = make([]float32, 0, n*il)
		for _, j := range live {
			x = append(x, j.x...)
		}
	}
	out := make([]float32, n*l)
	t0 := time.Now()
	err := m.predict(x, n, out)
	if b.observe != nil {
		b.observe(n, time.Since(t0))
	}
	off := 0
	for _, j := range live {
		if err != nil {
			j.done <- result{err: err}
			continue
		}
		j.done <- result{probs: out[off*l : (off+j.n)*l : (off+j.n)*l]}
		off += j.n
	}
}
