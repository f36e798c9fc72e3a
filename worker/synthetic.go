package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/internal/retry"
)

// A synthetic step (ComputeConfig.Synthetic) stands in for the forward and
// backward pass: it sleeps the step's measured compute time and pushes a
// gradient of the net's real shapes, with values that are a pure function
// of the run seed, the step, the worker and the position. Everything else
// is the real protocol: the pull of the step's weights, the push (after the
// step, or tensor by tensor during the "backward" sleep with Overlap), the
// coordinator's work and step decisions and, with synchronised BatchNorm,
// one exchange per BatchNorm layer in the forward and one in the backward
// pass with the real slot sizes. So many workers fit on few cores while
// the servers, the coordinator and the network carry the load of real ones.
//
// The forward pass takes a third of the time and the backward pass the
// rest (a backward pass costs about twice a forward pass); the backward
// sleep is spread over the layers in proportion to their FLOPs
// (model.Config.KernelFLOPs), each layer's parameters ready at its end, so
// that an overlapped push gets each gradient when a real step would have
// it: the dense layers' (most of the bytes) early, the convolutions' (most
// of the time) late.

// forwardShare is the forward pass's part of a synthetic step.
const forwardShare = 1.0 / 3

// SyntheticGradient fills g (the gradients of the net's parameters, in
// model.Net.Params() order) with the values a synthetic step of worker
// (its Rank) pushes at step: uniform in [-1e-3, 1e-3), a pure function of
// seed, step, worker and position.
func SyntheticGradient(g [][]float32, seed uint64, step int64, worker uint64) {
	for p := range g {
		s := splitmix(seed ^ splitmix(uint64(step)) ^ splitmix(worker+uint64(p)<<32))
		for i := range g[p] {
			// xorshift64*, seeded per tensor: cheap, so that many synthetic
			// workers on a few cores spend their CPU on the protocol
			s ^= s >> 12
			s ^= s << 25
			s ^= s >> 27
			v := s * 0x2545F4914F6CDD1D
			g[p][i] = (float32(v>>40)/float32(1<<24) - 0.5) * 2e-3
		}
	}
}

// splitmix is SplitMix64's finaliser: a bijective mix of x.
func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	x ^= x >> 31
	if x == 0 {
		return 1 // xorshift's state must not be zero
	}
	return x
}

// syntheticStep is Step with ComputeConfig.Synthetic: k is the batch's
// record count.
func (c *Compute) syntheticStep(ctx context.Context, step int64, k int) (float64, error) {
	t0 := time.Now()
	params := c.net.Params()
	if c.synth == nil {
		c.synth = make([][]float32, len(params))
		for i, p := range params {
			c.synth[i] = make([]float32, len(p.Data))
		}
	}
	SyntheticGradient(c.synth, c.cfg.Seed, step, c.cfg.Worker)
	bn := c.net.BN()
	// the sleeps end at times fixed from the step's start (shifted by the
	// exchanges' waits, when the worker computes nothing), so that late
	// wake-ups on a loaded machine do not add up
	var done time.Duration // of the compute, slept
	bn0 := c.BNSyncTime
	work := func(d time.Duration) bool {
		done += d
		return retry.Sleep(ctx, time.Until(t0.Add(done+c.BNSyncTime-bn0)))
	}
	// the forward pass: each BatchNorm layer's sums (count, Σx, Σx²) over
	// the step's workers, a unit-variance batch
	fwd := time.Duration(float64(c.cfg.Synthetic) * forwardShare)
	for l := range bn {
		if !work(fwd / time.Duration(len(bn)+1)) {
			return 0, ctx.Err()
		}
		if c.bnSync != nil {
			ch := len(bn[l].Mean)
			vals := make([]float64, 1+2*ch)
			vals[0] = float64(k)
			for i := range ch {
				vals[1+ch+i] = float64(k)
			}
			if err := c.syncBN(ctx, step, 2*l, vals); err != nil {
				return 0, err
			}
		}
	}
	if !work(fwd - fwd/time.Duration(len(bn)+1)*time.Duration(len(bn))) {
		return 0, ctx.Err()
	}
	// the backward pass: parameters from the last to the first, each after
	// its share of the time; a BatchNorm layer's backward exchange (Σdy,
	// Σdy·x̂) before its γ
	back := c.cfg.Synthetic - fwd
	// each parameter's share of the backward time: its layer's FLOPs, on
	// the layer's kernel (the layer's bias and BatchNorm parameters are
	// ready with it)
	flops := c.net.Config().KernelFLOPs()
	var total float64
	for _, p := range params {
		total += flops[p.Name]
	}
	bnLayer := map[string]int{}
	for l, st := range bn {
		bnLayer[st.Name+"/gamma"] = l
	}
	var ready func(p int, g []float32)
	var res chan pushed
	b0 := c.client.PushedBytes()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var gate *stepGate
	tp := time.Now()
	if c.cfg.Overlap {
		gate = newStepGate(len(c.tensors))
		for t := range c.tensors {
			if netspec.TensorParam(c.net, t) < 0 {
				gate.release(t, c.tensors[t])
			}
		}
		ready = func(p int, g []float32) { gate.release(netspec.ParamTensor(c.net, p), g) }
		res = make(chan pushed, 1)
		go func() {
			v, err := c.client.PushGated(pctx, step, c.version, gate)
			res <- pushed{v, err}
		}()
	}
	fail := func(err error) (float64, error) {
		if gate != nil {
			close(gate.failed)
			cancel()
			<-res
		}
		return 0, err
	}
	var sofar float64
	for p := len(params) - 1; p >= 0; p-- {
		// to the parameter's cumulative share, so the last ends the step
		sofar += flops[params[p].Name]
		if !work(fwd + time.Duration(float64(back)*sofar/total) - done) {
			return fail(ctx.Err())
		}
		if l, ok := bnLayer[params[p].Name]; ok && c.bnSync != nil {
			vals := make([]float64, 2*len(bn[l].Mean))
			if err := c.syncBN(ctx, step, 2*l+1, vals); err != nil {
				return fail(err)
			}
		}
		if ready != nil {
			ready(p, c.synth[p])
		}
	}
	tc := time.Now()
	c.ComputeTime += tc.Sub(t0)
	var (
		v   int64
		err error
	)
	if gate != nil {
		r := <-res
		v, err = r.v, r.err
		c.PushTime += time.Since(tc)
		c.PushSpan += time.Since(tp)
	} else {
		v, err = c.client.Push(ctx, step, c.version, netspec.Push(c.net, c.synth))
		c.PushTime += time.Since(tc)
		c.PushSpan += time.Since(tc)
	}
	c.PushBytes += c.client.PushedBytes() - b0
	c.Pushes++
	if err != nil {
		return 0, fmt.Errorf("push step %d: %w", step, err)
	}
	want := v
	if c.cfg.Sync {
		want = step + 1
	}
	// no loss is computed: the step reports 0
	return 0, c.Pull(ctx, want)
}

// syncBN is one synchronised-BatchNorm exchange, timed.
func (c *Compute) syncBN(ctx context.Context, step int64, slot int, vals []float64) error {
	t := time.Now()
	err := c.bnSync(ctx, step, slot, vals)
	c.BNSyncTime += time.Since(t)
	if err != nil {
		return fmt.Errorf("synchronised batchnorm slot %d: %w", slot, err)
	}
	return nil
}

// pushed is a gated push's result.
type pushed struct {
	v   int64
	err error
}
