package model

import (
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
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
	outT    *tensor.Dense
	out     []float32
	mean    []float64 // statistics used by the last forward pass
	invStd  []float64
	batch   bool // whether the last pass used batch statistics
	// maskInput: the input is a ReLU's output, and the gradient passed back is
	// zeroed where the input is 0 — the ReLU's backward pass, fused (the
	// producer then skips its own mask pass).
	maskInput bool
}

func newBatchNorm(shape tensor.Shape, eps float64, st *bnState, mode *runMode) *batchNorm {
	s := 1
	for _, d := range shape[2:] {
		s *= d
	}
	op := &batchNorm{opBase: newOpBase("batchnorm", shape, len(shape), 1, 1), n: shape[0], c: shape[1], s: s, eps: eps, st: st, mode: mode}
	op.outT, op.out = newBuf(shape)
	op.mean = make([]float64, op.c)
	op.invStd = make([]float64, op.c)
	return op
}

func (op *batchNorm) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], len(op.out), "batchnorm input")
	if err != nil {
		return nil, err
	}
	gamma, err := f32(vals[1], op.c, "batchnorm gamma")
	if err != nil {
		return nil, err
	}
	beta, err := f32(vals[2], op.c, "batchnorm beta")
	if err != nil {
		return nil, err
	}
	n, c, s := op.n, op.c, op.s
	m := float64(n * s)
	op.batch = op.mode.bn != BNInfer
	st := op.st
	parallelFor(c, func(ch int) {
		var mean, invStd float64
		if op.batch {
			var sum float64
			for i := 0; i < n; i++ {
				for _, v := range x[(i*c+ch)*s : (i*c+ch+1)*s] {
					sum += float64(v)
				}
			}
			mean = sum / m
			var sq float64
			for i := 0; i < n; i++ {
				for _, v := range x[(i*c+ch)*s : (i*c+ch+1)*s] {
					d := float64(v) - mean
					sq += d * d
				}
			}
			variance := sq / m
			invStd = 1 / math.Sqrt(variance+op.eps)
			switch op.mode.bn {
			case BNTrain:
				unbiased := variance
				if m > 1 {
					unbiased = sq / (m - 1)
				}
				st.mean[ch] = float32(st.momentum*float64(st.mean[ch]) + (1-st.momentum)*mean)
				st.variance[ch] = float32(st.momentum*float64(st.variance[ch]) + (1-st.momentum)*unbiased)
			case BNEstimate:
				st.sumMean[ch] += mean * m
				st.sumSq[ch] += (variance + mean*mean) * m
			}
		} else {
			mean = float64(st.mean[ch])
			invStd = 1 / math.Sqrt(float64(st.variance[ch])+op.eps)
		}
		op.mean[ch], op.invStd[ch] = mean, invStd
		scale := float64(gamma[ch]) * invStd
		shift := float64(beta[ch]) - mean*scale
		for i := 0; i < n; i++ {
			in := x[(i*c+ch)*s : (i*c+ch+1)*s]
			out := op.out[(i*c+ch)*s : (i*c+ch+1)*s]
			for j, v := range in {
				out[j] = float32(float64(v)*scale + shift)
			}
		}
	})
	if op.mode.bn == BNEstimate {
		st.count += m
	}
	return op.outT, nil
}

func (op *batchNorm) DiffWRT(int) []bool { return []bool{true, true, true} }

func (op *batchNorm) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	x, gamma := inputs[0], inputs[1]
	gx := &bnGrad{opBase: newOpBase("batchnorm_dx", x.Shape(), len(x.Shape()), 1, len(x.Shape())), fwd: op, wrt: 0}
	gx.outT, gx.out = newBuf(x.Shape())
	dx, err := G.ApplyOp(gx, x, gamma, grad)
	if err != nil {
		return nil, err
	}
	gg := &bnGrad{opBase: newOpBase("batchnorm_dgamma", tensor.Shape{op.c}, len(x.Shape()), 1, len(x.Shape())), fwd: op, wrt: 1}
	gg.outT, gg.out = newBuf(tensor.Shape{op.c})
	dgamma, err := G.ApplyOp(gg, x, gamma, grad)
	if err != nil {
		return nil, err
	}
	gb := &biasGrad{opBase: newOpBase("bias_grad", tensor.Shape{op.c}, len(x.Shape())), n: op.n, c: op.c, s: op.s}
	gb.outT, gb.out = newBuf(tensor.Shape{op.c})
	dbeta, err := G.ApplyOp(gb, grad)
	return G.Nodes{dx, dgamma, dbeta}, err
}

// bnGrad computes dx (wrt 0) or dgamma (wrt 1) from x, gamma and dy, using the
// statistics of the forward pass. With batch statistics:
//
//	x̂ = (x−μ)·σ⁻¹, dγ = Σ dy·x̂, dβ = Σ dy,
//	dx = γσ⁻¹/m · (m·dy − dβ − x̂·dγ).
//
// With running statistics (frozen), dx = γσ⁻¹·dy.
type bnGrad struct {
	opBase
	fwd  *batchNorm
	wrt  int
	outT *tensor.Dense
	out  []float32
}

func (op *bnGrad) Do(vals ...G.Value) (G.Value, error) {
	f := op.fwd
	x, err := f32(vals[0], len(f.out), "batchnorm input")
	if err != nil {
		return nil, err
	}
	gamma, err := f32(vals[1], f.c, "batchnorm gamma")
	if err != nil {
		return nil, err
	}
	dy, err := f32(vals[2], len(f.out), "batchnorm grad")
	if err != nil {
		return nil, err
	}
	n, c, s := f.n, f.c, f.s
	m := float64(n * s)
	parallelFor(c, func(ch int) {
		mean, inv := f.mean[ch], f.invStd[ch]
		var sdy, sdyx float64
		for i := 0; i < n; i++ {
			xi := x[(i*c+ch)*s : (i*c+ch+1)*s]
			for j, g := range dy[(i*c+ch)*s : (i*c+ch+1)*s] {
				sdy += float64(g)
				sdyx += float64(g) * (float64(xi[j]) - mean) * inv
			}
		}
		if op.wrt == 1 {
			op.out[ch] = float32(sdyx)
			return
		}
		k := float64(gamma[ch]) * inv
		for i := 0; i < n; i++ {
			xi := x[(i*c+ch)*s : (i*c+ch+1)*s]
			gi := dy[(i*c+ch)*s : (i*c+ch+1)*s]
			out := op.out[(i*c+ch)*s : (i*c+ch+1)*s]
			if !f.batch {
				for j, g := range gi {
					if f.maskInput && !(xi[j] > 0) {
						out[j] = 0
						continue
					}
					out[j] = float32(k * float64(g))
				}
				continue
			}
			for j, g := range gi {
				xh := (float64(xi[j]) - mean) * inv
				out[j] = float32(k / m * (m*float64(g) - sdy - xh*sdyx))
			}
			if f.maskInput {
				for j, v := range xi {
					if !(v > 0) {
						out[j] = 0
					}
				}
			}
		}
	})
	return op.outT, nil
}
