package model

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/tailorml/tailor/model/internal/vec"
)

// BNMode says which statistics a BatchNorm layer normalises with.
type BNMode int

const (
	// BNTrain normalises with the batch's statistics and updates the running
	// averages (momentum as in Keras: running = m·running + (1−m)·batch).
	BNTrain BNMode = iota
	// BNEstimate normalises with the batch's statistics and accumulates exact
	// population statistics instead of running averages (see Net.EstimateBN).
	BNEstimate
	// BNInfer normalises with the running statistics (evaluation, prediction).
	BNInfer
)

// runMode is shared by the ops of one graph; the net sets it before a run.
type runMode struct {
	bn      BNMode
	dropout bool
	seed    uint64 // dropout seed (run seed mixed with worker rank)
	step    uint64 // dropout step
	offset  int    // images before this batch in the shared batch (StepOptions.DropoutOffset)
	// sync, if set, makes BatchNorm synchronised (BNTrain only): see
	// StepOptions.BNSync
	sync func(slot int, vals []float64) error
	// ready, if set, is told each parameter's index once its gradient is
	// final (StepOptions.GradReady)
	ready func(param int)
	// posWeight, if set, weighs each label's positive targets in the loss
	// (StepOptions.PosWeight)
	posWeight []float32
	// syncErr is the first error sync returned in the run: the step's
	// error as it is, not inside the VM's trace of the op that called it
	syncErr error
}

// synchronise calls sync for slot and keeps its first error.
func (m *runMode) synchronise(slot int, vals []float64) error {
	err := m.sync(slot, vals)
	if err != nil && m.syncErr == nil {
		m.syncErr = fmt.Errorf("synchronised batchnorm slot %d: %w", slot, err)
	}
	return err
}

// bnState is one BatchNorm layer's running statistics, shared by all graphs
// of a net (one per batch size).
type bnState struct {
	mean, variance []float32
	momentum       float64 // Keras' momentum: the weight of the old value
	// accumulators for BNEstimate
	sumMean, sumSq []float64
	count          float64
}

// batchNorm normalises each channel of x (n, c, h, w) or (n, c) over the
// batch and positions, then scales by gamma and shifts by beta. All sums are
// in float64 (gorgonia's stock op sums in float32 and drifts).
type batchNorm struct {
	opBase
	n, c, s int // s = positions per channel per image (h·w, or 1)
	eps     float64
	st      *bnState
	mode    *runMode
	shape   tensor.Shape
	outT    *tensor.Dense
	out     []float32 // nil when the op only computes statistics (convBlock)
	mean    []float64 // statistics used by the last forward pass
	invStd  []float64
	// Σdy and Σdy·x̂ per channel, from the last backward pass: computed once
	// by the dx op and read by the dγ and dβ ops, which run after it.
	sumDy, sumDyXh []float64
	batch          bool // whether the last pass used batch statistics
	// maskInput: the input is a ReLU's output, and the gradient passed back is
	// zeroed where the input is 0 — the ReLU's backward pass, fused (the
	// producer then skips its own mask pass).
	maskInput bool
	// layer is the layer's index among the net's BatchNorm layers: its
	// synchronised BatchNorm slots are 2·layer (forward) and 2·layer+1
	// (backward).
	layer int
	// synced: the last pass normalised with the statistics of every
	// worker's batch; m is the count they cover; red is the exchange
	// buffer.
	synced bool
	m      float64
	red    []float64
	coef   []float32 // per-channel scale and shift of a (n, c) pass
	// preStats, if set, holds Σx and Σx² of every (image, channel) plane
	// of the input, at 2·(i·c+ch) and 2·(i·c+ch)+1, computed by the conv
	// that produced it while the plane was in cache (conv3x3.stats); the
	// statistics then need no pass over x.
	preStats []float64
}

func newBatchNorm(shape tensor.Shape, eps float64, layer int, st *bnState, mode *runMode) *batchNorm {
	s := 1
	for _, d := range shape[2:] {
		s *= d
	}
	op := &batchNorm{opBase: newOpBase("batchnorm", shape, len(shape), 1, 1), n: shape[0], c: shape[1], s: s, eps: eps, layer: layer, st: st, mode: mode, shape: shape.Clone()}
	op.outT, op.out = newBuf(shape)
	op.mean = make([]float64, op.c)
	op.invStd = make([]float64, op.c)
	op.sumDy = make([]float64, op.c)
	op.sumDyXh = make([]float64, op.c)
	return op
}

func (op *batchNorm) Do(vals ...G.Value) (G.Value, error) {
	x, gamma, beta, err := op.start(vals)
	if err != nil {
		return nil, err
	}
	if op.out == nil {
		op.outT, op.out = newBuf(op.shape)
	}
	n, c, s := op.n, op.c, op.s
	if s == 1 {
		// (n, c): a row of channels per image, one float per plane
		sc := op.scratch2(c)
		for ch := range c {
			sc[ch], sc[c+ch] = op.affine(ch, gamma, beta)
		}
		parallelFor(n, func(i int) {
			out := op.out[i*c : (i+1)*c]
			for ch, v := range x[i*c : (i+1)*c] {
				out[ch] = v*sc[ch] + sc[c+ch]
			}
		})
		return op.outT, nil
	}
	parallelFor(c, func(ch int) {
		scale, shift := op.affine(ch, gamma, beta)
		for i := 0; i < n; i++ {
			in := x[(i*c+ch)*s : (i*c+ch+1)*s]
			out := op.out[(i*c+ch)*s : (i*c+ch+1)*s]
			vec.Affine(out, in, scale, shift)
		}
	})
	return op.outT, nil
}

// scratch2 returns the op's buffer of 2·c per-channel coefficients.
func (op *batchNorm) scratch2(c int) []float32 {
	if len(op.coef) < 2*c {
		op.coef = make([]float32, 2*c)
	}
	return op.coef[:2*c]
}

// start checks a forward pass's inputs (x, γ, β) and prepares the
// statistics it normalises with.
func (op *batchNorm) start(vals []G.Value) (x, gamma, beta []float32, err error) {
	if x, err = f32(vals[0], op.n*op.c*op.s, "batchnorm input"); err != nil {
		return nil, nil, nil, err
	}
	if gamma, err = f32(vals[1], op.c, "batchnorm gamma"); err != nil {
		return nil, nil, nil, err
	}
	if beta, err = f32(vals[2], op.c, "batchnorm beta"); err != nil {
		return nil, nil, nil, err
	}
	return x, gamma, beta, op.prepare(x)
}

// prepare sets the per-channel mean and 1/σ the pass normalises with: the
// batch's (from x), updating the running or estimated statistics, or the
// running ones in BNInfer mode.
func (op *batchNorm) prepare(x []float32) error {
	n, c, s := op.n, op.c, op.s
	m := float64(n * s)
	op.batch = op.mode.bn != BNInfer
	op.synced = op.mode.bn == BNTrain && op.mode.sync != nil
	st := op.st
	if !op.batch {
		for ch := range c {
			op.mean[ch] = float64(st.mean[ch])
			op.invStd[ch] = 1 / math.Sqrt(float64(st.variance[ch])+op.eps)
		}
		return nil
	}
	// One pass, float64 sums of x and x²: activations here are O(1),
	// far from where E[x²]−E[x]² loses float64 precision.
	sums := op.sums()
	if pre := op.preStats; pre != nil {
		for ch := range c {
			var sum, sumSq float64
			for i := 0; i < n; i++ {
				sum += pre[2*(i*c+ch)]
				sumSq += pre[2*(i*c+ch)+1]
			}
			sums[1+ch], sums[1+c+ch] = sum, sumSq
		}
	} else {
		parallelFor(c, func(ch int) {
			var sum, sumSq float64
			for i := 0; i < n; i++ {
				if s == 1 { // (n, c): one float per plane
					a := float64(x[i*c+ch])
					sum += a
					sumSq += a * a
					continue
				}
				a, q := vec.SumSq64(x[(i*c+ch)*s : (i*c+ch+1)*s])
				sum += a
				sumSq += q
			}
			sums[1+ch], sums[1+c+ch] = sum, sumSq
		})
	}
	sums[0] = m
	if op.synced {
		// synchronised BatchNorm: the statistics of every worker's
		// batch together
		if err := op.mode.synchronise(2*op.layer, sums); err != nil {
			return fmt.Errorf("batchnorm %d: %w", op.layer, err)
		}
		m = sums[0]
	}
	op.m = m
	for ch := range c {
		mean := sums[1+ch] / m
		variance := max(sums[1+c+ch]/m-mean*mean, 0)
		switch op.mode.bn {
		case BNTrain:
			unbiased := variance
			if m > 1 {
				unbiased = variance * m / (m - 1)
			}
			st.mean[ch] = float32(st.momentum*float64(st.mean[ch]) + (1-st.momentum)*mean)
			st.variance[ch] = float32(st.momentum*float64(st.variance[ch]) + (1-st.momentum)*unbiased)
		case BNEstimate:
			st.sumMean[ch] += mean * m
			st.sumSq[ch] += (variance + mean*mean) * m
		}
		op.mean[ch], op.invStd[ch] = mean, 1/math.Sqrt(variance+op.eps)
	}
	if op.mode.bn == BNEstimate {
		st.count += m
	}
	return nil
}

// affine is channel ch's normalisation as y = x·scale + shift, from the
// statistics prepare set.
func (op *batchNorm) affine(ch int, gamma, beta []float32) (scale, shift float32) {
	mean, invStd := op.mean[ch], op.invStd[ch]
	return float32(float64(gamma[ch]) * invStd), float32(float64(beta[ch]) - mean*float64(gamma[ch])*invStd)
}

// sums returns the op's reduction buffer: a count, then c sums, then c
// more (the layout synchronised BatchNorm exchanges).
func (op *batchNorm) sums() []float64 {
	if op.red == nil {
		op.red = make([]float64, 1+2*op.c)
	}
	return op.red
}

func (op *batchNorm) DiffWRT(int) []bool { return []bool{true, true, true} }

func (op *batchNorm) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	return bnGradNodes(op, nil, inputs[0], inputs[1], grad)
}

// bnGradNodes builds the gradient ops of BatchNorm f (followed by the fused
// max-pool pool, if not nil) with input x and scale gamma.
func bnGradNodes(f *batchNorm, pool *bnPool, x, gamma, grad *G.Node) (G.Nodes, error) {
	xs := x.Shape()
	name := "batchnorm_dx"
	if pool != nil {
		name = "batchnorm_maxpool_dx"
	}
	gx := &bnGrad{opBase: newOpBase(name, xs, len(xs), 1, len(xs)), fwd: f, wrt: 0, pool: pool}
	gx.outT, gx.out = newBuf(xs)
	dx, err := G.ApplyOp(gx, x, gamma, grad)
	if err != nil {
		return nil, err
	}
	// dγ and dβ take dx as an input only to run after it: they read the sums
	// it computed.
	gg := &bnGrad{opBase: newOpBase("batchnorm_dgamma", tensor.Shape{f.c}, len(xs)), fwd: f, wrt: 1}
	gg.outT, gg.out = newBuf(tensor.Shape{f.c})
	dgamma, err := G.ApplyOp(gg, dx)
	if err != nil {
		return nil, err
	}
	gb := &bnGrad{opBase: newOpBase("batchnorm_dbeta", tensor.Shape{f.c}, len(xs)), fwd: f, wrt: 2}
	gb.outT, gb.out = newBuf(tensor.Shape{f.c})
	dbeta, err := G.ApplyOp(gb, dx)
	return G.Nodes{dx, dgamma, dbeta}, err
}

// bnGrad computes dx (wrt 0, inputs x, γ, dy), dγ (wrt 1) or dβ (wrt 2,
// both with input dx, for ordering) using the statistics of the forward pass.
// With batch statistics:
//
//	x̂ = (x−μ)·σ⁻¹, dγ = Σ dy·x̂, dβ = Σ dy,
//	dx = γσ⁻¹/m · (m·dy − dβ − x̂·dγ),
//
// evaluated per element as A·dy + B·x + C with per-channel A, B, C. With
// running statistics (frozen), dx = γσ⁻¹·dy. Sums are in float64.
type bnGrad struct {
	opBase
	gradReady
	fwd  *batchNorm
	wrt  int
	outT *tensor.Dense
	out  []float32
	// pool, if set, is the max-pool fused after the BatchNorm (bnPool): dy
	// is the pooled output's gradient, and the BatchNorm output's gradient
	// is dy at each window's maximum and 0 elsewhere, never materialised.
	pool *bnPool
	// planeSum, if set (enablePlaneSums), receives Σdx of every (image,
	// channel) plane: the bias gradient of the conv below (biasGrad.pre).
	planeSum []float64
	// Σ dy and Σ dy·x̂ over every worker (synchronised BatchNorm)
	gsumDy, gsumDyXh []float64
}

func (op *bnGrad) Do(vals ...G.Value) (G.Value, error) {
	defer op.fire()
	f := op.fwd
	switch op.wrt {
	case 1:
		for ch, v := range f.sumDyXh {
			op.out[ch] = float32(v)
		}
		return op.outT, nil
	case 2:
		for ch, v := range f.sumDy {
			op.out[ch] = float32(v)
		}
		return op.outT, nil
	}
	x, err := f32(vals[0], f.n*f.c*f.s, "batchnorm input")
	if err != nil {
		return nil, err
	}
	gamma, err := f32(vals[1], f.c, "batchnorm gamma")
	if err != nil {
		return nil, err
	}
	n, c, s := f.n, f.c, f.s
	m := float64(n * s)
	ps := s // dy's positions per plane
	if op.pool != nil {
		ps = op.pool.oh * op.pool.ow
	}
	dy, err := f32(vals[2], n*c*ps, "batchnorm grad")
	if err != nil {
		return nil, err
	}
	parallelFor(c, func(ch int) {
		mean, inv := f.mean[ch], f.invStd[ch]
		var sdy, sdyx float64
		for i := 0; i < n; i++ {
			pl := i*c + ch
			var a, d float64
			if s == 1 { // (n, c): one float per plane
				a = float64(dy[pl])
				d = a * float64(x[pl])
			} else if op.pool != nil {
				a, d = sumDotAt64(dy[pl*ps:(pl+1)*ps], op.pool.arg[pl*ps:(pl+1)*ps], x[pl*s:(pl+1)*s])
			} else {
				a, d = vec.SumDot64(dy[pl*s:(pl+1)*s], x[pl*s:(pl+1)*s])
			}
			sdy += a
			sdyx += d
		}
		// this worker's Σ dy and Σ dy·x̂: its dβ and dγ
		f.sumDy[ch], f.sumDyXh[ch] = sdy, (sdyx-mean*sdy)*inv
		if f.synced {
			f.red[ch], f.red[c+ch] = sdy, sdyx
		}
	})
	sumDy, sumDyXh := f.sumDy, f.sumDyXh
	if f.synced {
		// synchronised BatchNorm: x̂ depends on every worker's batch, so dx
		// takes Σ dy and Σ dy·x̂ over all of them (each worker's dy is of
		// its own loss), over the count they cover
		red := f.red[:2*c]
		if err := f.mode.synchronise(2*f.layer+1, red); err != nil {
			return nil, fmt.Errorf("batchnorm %d backward: %w", f.layer, err)
		}
		if op.gsumDy == nil {
			op.gsumDy, op.gsumDyXh = make([]float64, c), make([]float64, c)
		}
		for ch := range c {
			op.gsumDy[ch] = red[ch]
			op.gsumDyXh[ch] = (red[c+ch] - f.mean[ch]*red[ch]) * f.invStd[ch]
		}
		sumDy, sumDyXh, m = op.gsumDy, op.gsumDyXh, f.m
	}
	parallelFor(c, func(ch int) {
		mean, inv := f.mean[ch], f.invStd[ch]
		sdy, sdyxh := sumDy[ch], sumDyXh[ch]
		k := float64(gamma[ch]) * inv
		a, b, cc := float32(k), float32(0), float32(0)
		if f.batch {
			b = float32(-k * sdyxh * inv / m)
			cc = float32(-k*sdy/m + k*sdyxh*inv*mean/m)
		}
		for i := 0; i < n; i++ {
			pl := i*c + ch
			xi := x[pl*s : (pl+1)*s]
			gi := dy[pl*ps : (pl+1)*ps]
			out := op.out[pl*s : (pl+1)*s]
			switch {
			case s == 1 && f.maskInput:
				// one float: vec.MaskedAffine's arithmetic, without a call
				v := x[pl]
				r := a*dy[pl] + b*v + cc
				if int32(math.Float32bits(v)) <= 0 {
					r = 0
				}
				out[0] = r
			case op.pool != nil:
				// dy is 0 but at the windows' maxima
				affineAt(out, gi, op.pool.arg[pl*ps:(pl+1)*ps], xi, a, b, cc, f.maskInput)
			case f.maskInput:
				vec.MaskedAffine(out, gi, xi, a, b, cc)
			default:
				for j, g := range gi {
					out[j] = a*g + b*xi[j] + cc
				}
			}
			if op.planeSum != nil {
				op.planeSum[pl] = vec.Sum64(out)
			}
		}
	})
	return op.outT, nil
}

// enablePlaneSums makes the dx op also sum each plane of its output, and
// returns where (see planeSum).
func (op *bnGrad) enablePlaneSums() []float64 {
	if op.wrt != 0 || len(op.fwd.shape) != 4 {
		return nil
	}
	if op.planeSum == nil {
		op.planeSum = make([]float64, op.fwd.n*op.fwd.c)
	}
	return op.planeSum
}

// affineAt is the BatchNorm gradient of one plane when its output gradient
// is g[o] at index arg[o] and 0 elsewhere: out = a·dy + b·x + c (0 where
// x ≤ 0 if masked), as maskedAffine computes it for that sparse dy.
func affineAt(out, g []float32, arg []int32, x []float32, a, b, c float32, masked bool) {
	x = x[:len(out)]
	if masked {
		vec.MaskedAffine0(out, x, b, c)
	} else {
		for j, v := range x {
			out[j] = b*v + c
		}
	}
	for o, j := range arg[:len(g)] {
		v := x[j]
		r := a*g[o] + b*v + c
		if masked && int32(math.Float32bits(v)) <= 0 {
			r = 0
		}
		out[j] = r
	}
}

// VecKernels names the kernels of the layers' element-wise loops and sums
// chosen for this CPU: "avx2", "avx" or "go".
func VecKernels() string { return vec.Kernels() }
