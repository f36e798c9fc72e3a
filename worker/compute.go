package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
)

// ComputeConfig is what a worker's step needs to know about the run.
type ComputeConfig struct {
	Rank    uint64 // worker rank: mixed into the dropout seed (0: the run seed itself)
	Seed    uint64 // run seed
	Augment input.Augment
	Mean    []float32 // input normalisation, from the manifest
	Std     []float32
	Sync    bool // pull exactly the version after this step (sync mode)
	// Delay is slept before every push: a straggler, for fault-injection
	// tests (fault worker.<id>.delay). It turns Overlap off.
	Delay time.Duration
	// Overlap sends each tensor of the push as soon as the step has it
	// (wire.Client.PushGated): the push runs during backprop.
	Overlap bool
	// PosWeight weighs each label's positive targets in the loss (nil:
	// none); the run's input.PosWeight over the training counts.
	PosWeight []float32
	// Synthetic, if positive, replaces the forward and backward pass by a
	// sleep of this long and a gradient of the real shapes with
	// deterministic values (see SyntheticGradient): a stand-in for a
	// worker's compute, for network and scaling experiments.
	Synthetic time.Duration
	// Worker is the worker's own rank (Rank of its id), whatever Rank is:
	// it seeds the synthetic gradients' values.
	Worker uint64
}

// Compute is one worker's step machinery: the net, its input buffers and the
// connection to the parameter servers. Not safe for concurrent use.
type Compute struct {
	cfg     ComputeConfig
	net     *model.Net
	client  *wire.Client
	tensors [][]float32 // aliases of the net's weights and statistics, spec order
	x, y    []float32
	version int64
	// bnSync, if set, synchronises BatchNorm with the step's other workers
	bnSync func(ctx context.Context, step int64, slot int, vals []float64) error
	synth  [][]float32 // a synthetic step's gradients (ComputeConfig.Synthetic)

	// Time spent, for the "share of a step spent communicating" figure.
	// ComputeTime includes InputTime (decoding and augmenting the batch).
	// PushTime is the push's time after the step's compute: with Overlap,
	// only what was not hidden behind backprop; PushSpan is the pushes'
	// whole time, from their first byte.
	ComputeTime, InputTime, PushTime, PushSpan, PullTime time.Duration
	// PushBytes is the payload bytes pushed (after compression) in Pushes
	// pushes
	PushBytes uint64
	Pushes    int
	// BNSyncTime is the part of ComputeTime spent exchanging BatchNorm
	// statistics (waiting for the step's slowest worker included)
	BNSyncTime time.Duration
}

// NewCompute wires a net to a parameter-server client built from the same
// spec (netspec.Tensors).
func NewCompute(cfg ComputeConfig, net *model.Net, client *wire.Client) *Compute {
	_, tensors := netspec.Tensors(net)
	return &Compute{cfg: cfg, net: net, client: client, tensors: tensors}
}

// SetBNSync makes every step's BatchNorm synchronised through f (see
// model.StepOptions.BNSync): f exchanges a slot's sums for their totals
// over the step's workers.
func (c *Compute) SetBNSync(f func(ctx context.Context, step int64, slot int, vals []float64) error) {
	c.bnSync = f
}

// Net is the worker's copy of the net.
func (c *Compute) Net() *model.Net { return c.net }

// Version is the weights version the net holds.
func (c *Compute) Version() int64 { return c.version }

// Pull loads the weights of at least version min into the net.
func (c *Compute) Pull(ctx context.Context, min int64) error {
	t0 := time.Now()
	v, err := c.client.Pull(ctx, min, c.tensors)
	c.PullTime += time.Since(t0)
	if err != nil {
		return fmt.Errorf("pull weights: %w", err)
	}
	c.version = v
	return nil
}

// ErrEmptyBatch is returned for a step without records.
var ErrEmptyBatch = errors.New("worker: empty batch")

// Step trains on one batch: it computes the gradient of recs with the
// current weights, pushes it (with the net's BatchNorm statistics) as the
// given step, and pulls the weights that follow. It returns the batch loss.
// offset is where recs start in the step's global batch: the dropout masks
// are drawn from there (model.StepOptions.DropoutOffset).
func (c *Compute) Step(ctx context.Context, step int64, epoch, offset int, recs []*shard.Record) (float64, error) {
	if len(recs) < 2 {
		return 0, fmt.Errorf("%w: %d records (BatchNorm needs two)", ErrEmptyBatch, len(recs))
	}
	if c.cfg.Synthetic > 0 {
		return c.syntheticStep(ctx, step, len(recs))
	}
	cfg := c.net.Config()
	n := cfg.InputLen()
	if len(c.x) < len(recs)*n {
		c.x = make([]float32, len(recs)*n)
		c.y = make([]float32, len(recs)*cfg.Labels)
	}
	t0 := time.Now()
	k := len(recs)
	input.FillBatch(c.x, c.y, recs, cfg.Labels, cfg.Size, cfg.Size, cfg.Channels, c.cfg.Augment, c.cfg.Mean, c.cfg.Std, c.cfg.Seed, epoch)
	c.InputTime += time.Since(t0)
	opt := model.StepOptions{Dropout: true, Seed: model.DropoutSeed(c.cfg.Seed, c.cfg.Rank), Step: uint64(step), DropoutOffset: offset, BN: model.BNTrain,
		PosWeight: c.cfg.PosWeight}
	if c.bnSync != nil {
		opt.BNSync = func(slot int, vals []float64) error {
			t := time.Now()
			err := c.bnSync(ctx, step, slot, vals)
			c.BNSyncTime += time.Since(t)
			return err
		}
	}
	b0 := c.client.PushedBytes()
	var (
		loss float64
		v    int64
		err  error
	)
	if c.cfg.Overlap && c.cfg.Delay == 0 {
		var computed bool
		loss, v, computed, err = c.overlapped(ctx, step, opt, c.x[:k*n], c.y[:k*cfg.Labels], k, t0)
		if !computed {
			return 0, err
		}
	} else {
		var grads [][]float32
		loss, grads, err = c.net.TrainStep(c.x[:k*n], c.y[:k*cfg.Labels], k, opt)
		c.ComputeTime += time.Since(t0)
		if err != nil {
			return 0, err
		}
		if c.cfg.Delay > 0 {
			time.Sleep(c.cfg.Delay) // fault injection: a straggler
		}
		t1 := time.Now()
		v, err = c.client.Push(ctx, step, c.version, netspec.Push(c.net, grads))
		c.PushTime += time.Since(t1)
		c.PushSpan += time.Since(t1)
	}
	c.PushBytes += c.client.PushedBytes() - b0
	c.Pushes++
	if err != nil {
		return loss, fmt.Errorf("push step %d: %w", step, err)
	}
	want := v
	if c.cfg.Sync {
		want = step + 1
	}
	return loss, c.Pull(ctx, want)
}

// overlapped runs a training step while pushing its gradient: each tensor
// goes to the servers as soon as backprop has it (the BatchNorm statistics,
// final after the forward pass, with the first gradient). computed is
// false if the step itself failed (then nothing was pushed completely).
func (c *Compute) overlapped(ctx context.Context, step int64, opt model.StepOptions, x, y []float32, k int, t0 time.Time) (loss float64, v int64, computed bool, err error) {
	gate := newStepGate(len(c.tensors))
	statsSent := false
	opt.GradReady = func(p int, g []float32) {
		if !statsSent {
			for t := range c.tensors {
				if netspec.TensorParam(c.net, t) < 0 {
					gate.release(t, c.tensors[t])
				}
			}
			statsSent = true
		}
		gate.release(netspec.ParamTensor(c.net, p), g)
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type pushed struct {
		v   int64
		err error
	}
	res := make(chan pushed, 1)
	tp := time.Now()
	go func() {
		v, err := c.client.PushGated(pctx, step, c.version, gate)
		res <- pushed{v, err}
	}()
	loss, _, err = c.net.TrainStep(x, y, k, opt)
	tc := time.Now()
	c.ComputeTime += tc.Sub(t0)
	if err != nil {
		close(gate.failed)
		cancel()
		<-res
		return 0, 0, false, err
	}
	r := <-res
	c.PushTime += time.Since(tc)
	c.PushSpan += time.Since(tp)
	return loss, r.v, true, r.err
}

// stepGate releases a push's tensors as a step finishes them.
type stepGate struct {
	ready  []chan struct{}
	data   [][]float32
	failed chan struct{} // closed when the step failed
}

func newStepGate(n int) *stepGate {
	g := &stepGate{ready: make([]chan struct{}, n), data: make([][]float32, n), failed: make(chan struct{})}
	for i := range g.ready {
		g.ready[i] = make(chan struct{})
	}
	return g
}

// release hands tensor t to the push (once).
func (g *stepGate) release(t int, data []float32) {
	g.data[t] = data
	close(g.ready[t])
}

// errStepFailed ends a push whose step failed.
var errStepFailed = errors.New("worker: the step failed")

// Tensor implements wire.Gate.
func (g *stepGate) Tensor(ctx context.Context, t int) ([]float32, error) {
	select {
	case <-g.ready[t]:
		return g.data[t], nil
	case <-g.failed:
		return nil, errStepFailed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
