package model

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ---- ReLU ----

type relu struct {
	opBase
	outT *tensor.Dense
	out  []float32
}

func newReLU(s tensor.Shape) *relu {
	op := &relu{opBase: newOpBase("relu", s, len(s))}
	op.outT, op.out = newBuf(s)
	return op
}

func (op *relu) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], len(op.out), "relu input")
	if err != nil {
		return nil, err
	}
	for i, v := range x {
		op.out[i] = max(v, 0)
	}
	return op.outT, nil
}

func (op *relu) DiffWRT(int) []bool { return []bool{true} }

func (op *relu) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := reluMask(output, grad)
	return G.Nodes{dx}, err
}

// reluMask zeroes grad where the ReLU output was not positive.
func reluMask(output, grad *G.Node) (*G.Node, error) {
	s := output.Shape()
	g := &reluGrad{opBase: newOpBase("relu_grad", s, len(s), len(s))}
	g.outT, g.out = newBuf(s)
	return G.ApplyOp(g, output, grad)
}

func (op *opBase) out0() tensor.Shape { return op.out }

// reluGrad: dx = dy where the output was positive.
type reluGrad struct {
	opBase
	outT *tensor.Dense
	out  []float32
}

func (op *reluGrad) Do(vals ...G.Value) (G.Value, error) {
	y, err := f32(vals[0], len(op.out), "relu output")
	if err != nil {
		return nil, err
	}
	dy, err := f32(vals[1], len(op.out), "relu grad")
	if err != nil {
		return nil, err
	}
	for i, v := range y {
		if v > 0 {
			op.out[i] = dy[i]
		} else {
			op.out[i] = 0
		}
	}
	return op.outT, nil
}

// ---- max pooling ----

// maxPool is a k×k max-pool with stride k and no padding (Keras' MaxPooling2D
// with pool_size k): the output is floor((h-k)/k)+1 on each side. The net
// pools inside bnPool (training) and convBlock (inference), which share its
// kernels (pool2Arg, pool3Arg, poolArg); the op on its own is their
// reference in the tests.
type maxPool struct {
	opBase
	n, c, h, w, k, oh, ow int
	outT                  *tensor.Dense
	out                   []float32
	arg                   []int32 // index into the input plane of each output's max
}

func newMaxPool(n, c, h, w, k int) *maxPool {
	oh, ow := (h-k)/k+1, (w-k)/k+1
	op := &maxPool{opBase: newOpBase(fmt.Sprintf("maxpool%d", k), tensor.Shape{n, c, oh, ow}, 4), n: n, c: c, h: h, w: w, k: k, oh: oh, ow: ow}
	op.outT, op.out = newBuf(op.out0())
	op.arg = make([]int32, len(op.out))
	return op
}

func (op *maxPool) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], op.n*op.c*op.h*op.w, "maxpool input")
	if err != nil {
		return nil, err
	}
	ip, opl := op.h*op.w, op.oh*op.ow
	parallelFor(op.n*op.c, func(pl int) {
		in := x[pl*ip : (pl+1)*ip]
		out := op.out[pl*opl : (pl+1)*opl]
		arg := op.arg[pl*opl : (pl+1)*opl]
		switch op.k {
		case 2:
			pool2Arg(out, arg, in, op.w, op.oh, op.ow)
		case 3:
			pool3Arg(out, arg, in, op.w, op.oh, op.ow)
		default:
			poolArg(out, arg, in, op.w, op.k, op.oh, op.ow)
		}
	})
	return op.outT, nil
}

// poolArg is a k×k, stride-k max-pool of one plane of width w, with the index
// of each maximum in the plane: strictly greater wins, so the first maximum
// is taken, as in PyTorch; a NaN wins over numbers.
func poolArg(out []float32, arg []int32, in []float32, w, k, oh, ow int) {
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			best := int32(oy*k*w + ox*k)
			bv := in[best]
			for ky := 0; ky < k; ky++ {
				base := (oy*k+ky)*w + ox*k
				for kx := 0; kx < k; kx++ {
					if v := in[base+kx]; v > bv || v != v {
						bv, best = v, int32(base+kx)
					}
				}
			}
			out[oy*ow+ox] = bv
			arg[oy*ow+ox] = best
		}
	}
}

// pool2Arg is poolArg for k = 2 without branches on the data (which a branch
// predictor cannot learn): the maximum, then the first element equal to it
// (with integer conditional moves). It gives the same result as poolArg but
// for the sign of a zero maximum (+0 here) and the index of a NaN (the
// window's last element here).
func pool2Arg(out []float32, arg []int32, in []float32, w, oh, ow int) {
	for oy := 0; oy < oh; oy++ {
		base := 2 * oy * w
		r0, r1 := in[base:base+w], in[base+w:base+2*w]
		o, g := out[oy*ow:(oy+1)*ow], arg[oy*ow:(oy+1)*ow]
		for ox := range o {
			a := 2 * ox
			v0, v1, v2, v3 := r0[a], r0[a+1], r1[a], r1[a+1]
			m := max(max(v0, v1), max(v2, v3))
			idx := base + w + a + 1
			if v2 == m {
				idx = base + w + a
			}
			if v1 == m {
				idx = base + a + 1
			}
			if v0 == m {
				idx = base + a
			}
			o[ox], g[ox] = m, int32(idx)
		}
	}
}

// pool3Arg is pool2Arg for k = 3.
func pool3Arg(out []float32, arg []int32, in []float32, w, oh, ow int) {
	for oy := 0; oy < oh; oy++ {
		base := 3 * oy * w
		r0, r1, r2 := in[base:base+w], in[base+w:base+2*w], in[base+2*w:base+3*w]
		o, g := out[oy*ow:(oy+1)*ow], arg[oy*ow:(oy+1)*ow]
		for ox := range o {
			a := 3 * ox
			v0, v1, v2 := r0[a], r0[a+1], r0[a+2]
			v3, v4, v5 := r1[a], r1[a+1], r1[a+2]
			v6, v7, v8 := r2[a], r2[a+1], r2[a+2]
			m := max(max(v0, v1, v2), max(v3, v4, v5), max(v6, v7, v8))
			idx := base + 2*w + a + 2
			if v7 == m {
				idx = base + 2*w + a + 1
			}
			if v6 == m {
				idx = base + 2*w + a
			}
			if v5 == m {
				idx = base + w + a + 2
			}
			if v4 == m {
				idx = base + w + a + 1
			}
			if v3 == m {
				idx = base + w + a
			}
			if v2 == m {
				idx = base + a + 2
			}
			if v1 == m {
				idx = base + a + 1
			}
			if v0 == m {
				idx = base + a
			}
			o[ox], g[ox] = m, int32(idx)
		}
	}
}

func (op *maxPool) DiffWRT(int) []bool { return []bool{true} }

func (op *maxPool) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	g := &maxPoolGrad{opBase: newOpBase("maxpool_grad", inputs[0].Shape(), 4), fwd: op}
	g.outT, g.out = newBuf(inputs[0].Shape())
	dx, err := G.ApplyOp(g, grad)
	return G.Nodes{dx}, err
}

type maxPoolGrad struct {
	opBase
	fwd  *maxPool
	outT *tensor.Dense
	out  []float32
}

func (op *maxPoolGrad) Do(vals ...G.Value) (G.Value, error) {
	f := op.fwd
	dy, err := f32(vals[0], len(f.out), "maxpool grad")
	if err != nil {
		return nil, err
	}
	ip, opl := f.h*f.w, f.oh*f.ow
	parallelFor(f.n*f.c, func(pl int) {
		dx := op.out[pl*ip : (pl+1)*ip]
		clear(dx)
		g := dy[pl*opl : (pl+1)*opl]
		for j, a := range f.arg[pl*opl : (pl+1)*opl] {
			dx[a] += g[j]
		}
	})
	return op.outT, nil
}

// ---- dropout ----

// dropout zeroes each activation with probability p and scales the rest by
// 1/(1-p) (inverted dropout; gorgonia's stock op scales by 1/p). The mask is a
// pure function of (seed, step, layer), so a replayed step drops the same units.
type dropout struct {
	opBase
	p     float64
	layer uint64
	mode  *runMode
	outT  *tensor.Dense
	out   []float32
	mask  []float32 // 0 or 1/(1-p); nil while dropout is off
	on    bool      // whether the last forward pass dropped
}

func newDropout(s tensor.Shape, p float64, layer uint64, mode *runMode) *dropout {
	op := &dropout{opBase: newOpBase("dropout", s, len(s)), p: p, layer: layer, mode: mode}
	op.outT, op.out = newBuf(s)
	op.mask = make([]float32, len(op.out))
	return op
}

func (op *dropout) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], len(op.out), "dropout input")
	if err != nil {
		return nil, err
	}
	op.on = op.mode.dropout && op.p > 0
	if !op.on {
		copy(op.out, x)
		return op.outT, nil
	}
	// Unit j of this batch is unit off+j of the shared batch, whose draw is
	// a pure function of (seed, step, layer, off+j): SplitMix64's output
	// for that position of a stream keyed by the rest. Any slice of the
	// shared batch, on any worker or thread, draws the same bits for it.
	key := mix64(op.mode.seed, mix64(op.mode.step, op.layer))
	off := uint64(op.mode.offset * (len(op.mask) / op.opBase.out[0]))
	scale := float32(1 / (1 - op.p))
	// a 53-bit uniform integer u is dropped when u/2⁵³ < p: exact for any p
	thr := op.p * (1 << 53)
	splitCols(len(op.mask), func(lo, hi int) {
		mask, out := op.mask[lo:hi], op.out[lo:hi]
		for j, v := range x[lo:hi] {
			m := scale
			if float64(splitmix(key, off+uint64(lo+j))>>11) < thr {
				m = 0
			}
			mask[j] = m
			out[j] = v * m
		}
	})
	return op.outT, nil
}

// splitmix is SplitMix64's output for position i of the stream keyed by key.
func splitmix(key, i uint64) uint64 {
	z := key + (i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (op *dropout) DiffWRT(int) []bool { return []bool{true} }

func (op *dropout) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	g := &dropoutGrad{opBase: newOpBase("dropout_grad", op.out0(), len(op.out0())), fwd: op}
	g.outT, g.out = newBuf(op.out0())
	dx, err := G.ApplyOp(g, grad)
	return G.Nodes{dx}, err
}

type dropoutGrad struct {
	opBase
	fwd  *dropout
	outT *tensor.Dense
	out  []float32
}

func (op *dropoutGrad) Do(vals ...G.Value) (G.Value, error) {
	dy, err := f32(vals[0], len(op.out), "dropout grad")
	if err != nil {
		return nil, err
	}
	if !op.fwd.on {
		copy(op.out, dy)
		return op.outT, nil
	}
	for i, m := range op.fwd.mask {
		op.out[i] = dy[i] * m
	}
	return op.outT, nil
}

// mix64 is splitmix64's finaliser over a combination of two words.
func mix64(a, b uint64) uint64 {
	z := a*0x9e3779b97f4a7c15 + b + 0x632be59bd9b4e019
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// ---- flatten ----

// flatten views (n, c, h, w) as (n, c·h·w) without copying (NCHW order, as
// PyTorch's Flatten).
type flatten struct {
	opBase
	view *tensor.Dense
	src  *float32
}

func newFlatten(n, k, inRank int) *flatten {
	return &flatten{opBase: newOpBase("flatten", tensor.Shape{n, k}, inRank)}
}

func (op *flatten) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], op.out.TotalSize(), "flatten input")
	if err != nil {
		return nil, err
	}
	if op.view == nil || op.src != &x[0] {
		op.view = tensor.New(tensor.WithShape(op.out...), tensor.WithBacking(x))
		op.src = &x[0]
	}
	return op.view, nil
}

func (op *flatten) DiffWRT(int) []bool { return []bool{true} }

func (op *flatten) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	in := inputs[0].Shape()
	dx, err := G.ApplyOp(&flatten{opBase: newOpBase("unflatten", in, 2)}, grad)
	return G.Nodes{dx}, err
}

// ---- dense ----

// dense is y = x·W + b with x (n×k), W (k×m) as in Keras, b (m).
type dense struct {
	opBase
	n, k, m    int
	relu       bool // apply ReLU to the output (fused)
	gradMasked bool // the consumer masks the gradient (see conv3x3)
	outT       *tensor.Dense
	out        []float32
}

func newDense(n, k, m int, relu bool) *dense {
	name := "dense"
	if relu {
		name = "dense_relu"
	}
	op := &dense{opBase: newOpBase(name, tensor.Shape{n, m}, 2, 2, 1), n: n, k: k, m: m, relu: relu}
	op.outT, op.out = newBuf(op.out0())
	return op
}

func (op *dense) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], op.n*op.k, "dense input")
	if err != nil {
		return nil, err
	}
	w, err := f32(vals[1], op.k*op.m, "dense weight")
	if err != nil {
		return nil, err
	}
	b, err := f32(vals[2], op.m, "dense bias")
	if err != nil {
		return nil, err
	}
	for i := 0; i < op.n; i++ {
		copy(op.out[i*op.m:(i+1)*op.m], b)
	}
	// out[:, lo:hi] = x · W[:, lo:hi]: each goroutine reads its own half of W
	// (the batch is small, W is large)
	splitCols(op.m, func(lo, hi int) {
		sgemm(false, false, op.n, hi-lo, op.k, 1, x, op.k, w[lo:], op.m, 1, op.out[lo:], op.m)
	})
	if op.relu {
		for j, v := range op.out {
			op.out[j] = max(v, 0)
		}
	}
	return op.outT, nil
}

func (op *dense) DiffWRT(int) []bool { return []bool{true, true, true} }

func (op *dense) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	x, w := inputs[0], inputs[1]
	if op.relu && !op.gradMasked {
		var err error
		if grad, err = reluMask(output, grad); err != nil {
			return nil, err
		}
	}
	gx := &denseGrad{opBase: newOpBase("dense_dx", x.Shape(), 2, 2), fwd: op, wrt: 0}
	gx.outT, gx.out = newBuf(x.Shape())
	dx, err := G.ApplyOp(gx, w, grad)
	if err != nil {
		return nil, err
	}
	gw := &denseGrad{opBase: newOpBase("dense_dw", w.Shape(), 2, 2), fwd: op, wrt: 1}
	gw.outT, gw.out = newBuf(w.Shape())
	dw, err := G.ApplyOp(gw, x, grad)
	if err != nil {
		return nil, err
	}
	gb := &biasGrad{opBase: newOpBase("bias_grad", tensor.Shape{op.m}, 2), n: op.n, c: op.m, s: 1}
	gb.outT, gb.out = newBuf(tensor.Shape{op.m})
	db, err := G.ApplyOp(gb, grad)
	return G.Nodes{dx, dw, db}, err
}

// denseGrad computes dx = dy·Wᵀ (wrt 0, inputs W, dy) or dW = xᵀ·dy (wrt 1,
// inputs x, dy).
type denseGrad struct {
	opBase
	gradReady
	fwd  *dense
	wrt  int
	outT *tensor.Dense
	out  []float32
}

func (op *denseGrad) Do(vals ...G.Value) (G.Value, error) {
	defer op.fire()
	f := op.fwd
	dy, err := f32(vals[1], f.n*f.m, "dense grad")
	if err != nil {
		return nil, err
	}
	if op.wrt == 0 {
		w, err := f32(vals[0], f.k*f.m, "dense weight")
		if err != nil {
			return nil, err
		}
		// dx[:, lo:hi] = dy · W[lo:hi, :]ᵀ
		splitCols(f.k, func(lo, hi int) {
			sgemm(false, true, f.n, hi-lo, f.m, 1, dy, f.m, w[lo*f.m:], f.m, 0, op.out[lo:], f.k)
		})
		return op.outT, nil
	}
	x, err := f32(vals[0], f.n*f.k, "dense input")
	if err != nil {
		return nil, err
	}
	// dW[lo:hi, :] = x[:, lo:hi]ᵀ · dy
	splitCols(f.k, func(lo, hi int) {
		sgemm(true, false, hi-lo, f.m, f.n, 1, x[lo:], f.k, dy, f.m, 0, op.out[lo*f.m:], f.m)
	})
	return op.outT, nil
}

// ---- sigmoid + binary cross-entropy ----

// bceLoss is the mean binary cross-entropy of sigmoid(z) against targets y,
// computed from the logits as max(z,0) − z·y + log(1+e^−|z|): it never takes
// log(0), however confident the net is. It is the same function as Keras'
// sigmoid output followed by binary_crossentropy, without the clipping.
// With positive weights p (runMode.posWeight, one per label) it is
// PyTorch's BCEWithLogitsLoss(pos_weight=p):
// −[p·y·log σ(z) + (1−y)·log(1−σ(z))] = (1−y)·z + (1+(p−1)·y)·softplus(−z),
// softplus(−z) = max(−z,0) + log(1+e^−|z|).
type bceLoss struct {
	opBase
	n, l int
	mode *runMode
	loss float64 // the last value, kept for the caller
}

func newBCELoss(n, l int, mode *runMode) *bceLoss {
	return &bceLoss{opBase: newOpBase("sigmoid_bce", tensor.ScalarShape(), 2, 2), n: n, l: l, mode: mode}
}

// posWeight is label j's positive weight: 1 without weights.
func posWeight(w []float32, j int) float64 {
	if w == nil {
		return 1
	}
	return float64(w[j])
}

func (op *bceLoss) Do(vals ...G.Value) (G.Value, error) {
	z, err := f32(vals[0], op.n*op.l, "logits")
	if err != nil {
		return nil, err
	}
	y, err := f32(vals[1], op.n*op.l, "targets")
	if err != nil {
		return nil, err
	}
	var sum float64
	if w := op.mode.posWeight; w != nil {
		for i, zi := range z {
			v, t := float64(zi), float64(y[i])
			sum += (1-t)*v + (1+(posWeight(w, i%op.l)-1)*t)*(max(-v, 0)+math.Log1p(math.Exp(-math.Abs(v))))
		}
	} else {
		for i, zi := range z {
			v := float64(zi)
			sum += max(v, 0) - v*float64(y[i]) + math.Log1p(math.Exp(-math.Abs(v)))
		}
	}
	op.loss = sum / float64(len(z))
	return G.NewF32(float32(op.loss)), nil
}

func (op *bceLoss) DiffWRT(int) []bool { return []bool{true, false} }

func (op *bceLoss) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	g := &bceGrad{opBase: newOpBase("sigmoid_bce_grad", inputs[0].Shape(), 2, 2, 0), n: op.n, l: op.l, mode: op.mode}
	g.outT, g.out = newBuf(inputs[0].Shape())
	dz, err := G.ApplyOp(g, inputs[0], inputs[1], grad)
	return G.Nodes{dz, nil}, err
}

// bceGrad: d(loss)/dz = g·(sigmoid(z) − y)/(n·l); with positive weights p,
// g·((1−y)·σ(z) − p·y·(1−σ(z)))/(n·l).
type bceGrad struct {
	opBase
	n, l int
	mode *runMode
	outT *tensor.Dense
	out  []float32
}

func (op *bceGrad) Do(vals ...G.Value) (G.Value, error) {
	z, err := f32(vals[0], op.n*op.l, "logits")
	if err != nil {
		return nil, err
	}
	y, err := f32(vals[1], op.n*op.l, "targets")
	if err != nil {
		return nil, err
	}
	g, err := scalarOf(vals[2])
	if err != nil {
		return nil, err
	}
	scale := float64(g) / float64(len(z))
	if w := op.mode.posWeight; w != nil {
		for i, zi := range z {
			s, t := sigmoid(float64(zi)), float64(y[i])
			op.out[i] = float32(scale * ((1-t)*s - posWeight(w, i%op.l)*t*(1-s)))
		}
		return op.outT, nil
	}
	for i, zi := range z {
		op.out[i] = float32(scale * (sigmoid(float64(zi)) - float64(y[i])))
	}
	return op.outT, nil
}

func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

// sigmoidOp turns logits into the net's output probabilities (inference only).
type sigmoidOp struct {
	opBase
	outT *tensor.Dense
	out  []float32
}

func newSigmoid(s tensor.Shape) *sigmoidOp {
	op := &sigmoidOp{opBase: newOpBase("sigmoid", s, len(s))}
	op.outT, op.out = newBuf(s)
	return op
}

func (op *sigmoidOp) Do(vals ...G.Value) (G.Value, error) {
	z, err := f32(vals[0], len(op.out), "logits")
	if err != nil {
		return nil, err
	}
	for i, v := range z {
		op.out[i] = float32(sigmoid(float64(v)))
	}
	return op.outT, nil
}
