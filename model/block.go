package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/tailorml/tailor/model/internal/vec"
)

// convBlock is the inference form of a conv block: 3x3 conv + bias → ReLU →
// BatchNorm (→ k×k max-pool), as one op with no backward pass. It keeps no
// state for a gradient (no columns, no pooling indices, no pre-BatchNorm
// activations): a group of images is convolved into scratch memory, and ReLU,
// the BatchNorm affine map and the pooling are applied while it is in cache,
// writing only the block's (pooled) output. The arithmetic is the training
// ops' own, in the same order, so it computes what conv3x3 → batchNorm →
// maxPool compute.
//
// With running statistics (BNInfer) that is all. With batch statistics
// (BNEstimate) the whole batch's activations are needed before any can be
// normalised, so the op then keeps them in a buffer allocated on first use.
type convBlock struct {
	opBase
	n, c, h, w, o int
	pool          int // pooling window and stride; 0: none
	oh, ow        int // output side
	bn            *batchNorm
	mode          *runMode
	sc            *scratch
	outT          *tensor.Dense
	out           []float32
	pre           []float32 // BNEstimate: conv+ReLU output of the whole batch
	scale, shift  []float32
}

func newConvBlock(n, c, h, w, o, pool int, eps float64, layer int, st *bnState, mode *runMode, sc *scratch) *convBlock {
	oh, ow := h, w
	if pool > 0 {
		oh, ow = (h-pool)/pool+1, (w-pool)/pool+1
	}
	op := &convBlock{opBase: newOpBase(fmt.Sprintf("conv3x3_relu_bn_pool%d", pool), tensor.Shape{n, o, oh, ow}, 4, 4, 1, 1, 1),
		n: n, c: c, h: h, w: w, o: o, pool: pool, oh: oh, ow: ow, mode: mode, sc: sc,
		scale: make([]float32, o), shift: make([]float32, o)}
	op.bn = &batchNorm{opBase: newOpBase("batchnorm_stats", tensor.Shape{n, o, h, w}, 4, 1, 1), n: n, c: o, s: h * w, eps: eps, layer: layer, st: st, mode: mode,
		mean: make([]float64, o), invStd: make([]float64, o)}
	op.outT, op.out = newBuf(op.out0())
	return op
}

func (op *convBlock) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], op.n*op.c*op.h*op.w, "conv input")
	if err != nil {
		return nil, err
	}
	wt, err := f32(vals[1], op.o*op.c*9, "conv weight")
	if err != nil {
		return nil, err
	}
	b, err := f32(vals[2], op.o, "conv bias")
	if err != nil {
		return nil, err
	}
	gamma, err := f32(vals[3], op.o, "batchnorm gamma")
	if err != nil {
		return nil, err
	}
	beta, err := f32(vals[4], op.o, "batchnorm beta")
	if err != nil {
		return nil, err
	}
	k, p := op.c*9, op.h*op.w
	nch, bmax := chunking(op.n, p)
	bufs := op.sc.take(workers(nch), k*bmax*p, op.o*bmax*p)
	if op.mode.bn == BNInfer {
		if err := op.bn.prepare(nil); err != nil {
			return nil, err
		}
		op.setAffine(gamma, beta)
		parallelForWorker(nch, func(wk, ch int) {
			i0, i1 := chunkBounds(ch, nch, op.n)
			y := bufs[2*wk+1]
			convChunk(bufs[2*wk], y, x, wt, op.c, op.h, op.w, op.o, i0, i1)
			ld := (i1 - i0) * p
			for i := i0; i < i1; i++ {
				for o := 0; o < op.o; o++ {
					op.emitInfer(i, o, y[o*ld+(i-i0)*p:o*ld+(i-i0+1)*p], b[o])
				}
			}
		})
		return op.outT, nil
	}
	// batch statistics: convolve everything, then normalise
	if op.pre == nil {
		op.pre = make([]float32, op.n*op.o*p)
	}
	parallelForWorker(nch, func(wk, ch int) {
		i0, i1 := chunkBounds(ch, nch, op.n)
		y := bufs[2*wk+1]
		convChunk(bufs[2*wk], y, x, wt, op.c, op.h, op.w, op.o, i0, i1)
		ld := (i1 - i0) * p
		for i := i0; i < i1; i++ {
			for o := 0; o < op.o; o++ {
				src := y[o*ld+(i-i0)*p : o*ld+(i-i0+1)*p]
				dst := op.pre[(i*op.o+o)*p : (i*op.o+o+1)*p]
				bias := b[o]
				vec.ReluBias(dst, src, bias)
			}
		}
	})
	if err := op.bn.prepare(op.pre); err != nil {
		return nil, err
	}
	op.setAffine(gamma, beta)
	parallelFor(op.n*op.o, func(pl int) {
		src := op.pre[pl*p : (pl+1)*p]
		scale, shift := op.scale[pl%op.o], op.shift[pl%op.o]
		vec.Affine(src, src, scale, shift)
		op.emit(pl/op.o, pl%op.o, src)
	})
	return op.outT, nil
}

func (op *convBlock) setAffine(gamma, beta []float32) {
	for ch := range op.o {
		op.scale[ch], op.shift[ch] = op.bn.affine(ch, gamma, beta)
	}
}

// emitInfer writes channel o of image i, given its conv output v without
// the bias, to the output: f(u) = max(u+bias, 0)·scale + shift, pooled if
// the block pools. f is nondecreasing when scale ≥ 0 (each rounding step
// is), so the maximum of f over a window is f of the window's maximum,
// exactly: the map then runs on the pooled values only. v is scratch.
func (op *convBlock) emitInfer(i, o int, v []float32, bias float32) {
	pl := i*op.o + o
	dst := op.out[pl*op.oh*op.ow : (pl+1)*op.oh*op.ow]
	scale, shift := op.scale[o], op.shift[o]
	switch {
	case op.pool == 0:
		for j, u := range v[:len(dst)] {
			dst[j] = max(u+bias, 0)*scale + shift
		}
	case scale >= 0:
		maxPoolPlane(dst, v, op.w, op.pool, op.oh, op.ow)
		for j, u := range dst {
			dst[j] = max(u+bias, 0)*scale + shift
		}
	default:
		for j, u := range v {
			v[j] = max(u+bias, 0)*scale + shift
		}
		maxPoolPlane(dst, v, op.w, op.pool, op.oh, op.ow)
	}
}

// emit writes channel o of image i, given its normalised plane v (h×w), to
// the output, pooled if the block pools.
func (op *convBlock) emit(i, o int, v []float32) {
	pl := i*op.o + o
	dst := op.out[pl*op.oh*op.ow : (pl+1)*op.oh*op.ow]
	if op.pool == 0 {
		copy(dst, v)
		return
	}
	maxPoolPlane(dst, v, op.w, op.pool, op.oh, op.ow)
}

// maxPoolPlane is a k×k, stride-k max-pool of one plane of width w into
// dst (oh×ow), without the indices a gradient would need. Like maxPool, a
// NaN in a window makes its maximum NaN.
func maxPoolPlane(dst, src []float32, w, k, oh, ow int) {
	for oy := 0; oy < oh; oy++ {
		d := dst[oy*ow : (oy+1)*ow]
		r := src[oy*k*w:]
		switch k {
		case 2:
			r0, r1 := r[:w], r[w:2*w]
			for ox := range d {
				a := 2 * ox
				d[ox] = max(max(r0[a], r0[a+1]), max(r1[a], r1[a+1]))
			}
		case 3:
			r0, r1, r2 := r[:w], r[w:2*w], r[2*w:3*w]
			for ox := range d {
				a := 3 * ox
				m0 := max(r0[a], r0[a+1], r0[a+2])
				m1 := max(r1[a], r1[a+1], r1[a+2])
				m2 := max(r2[a], r2[a+1], r2[a+2])
				d[ox] = max(m0, m1, m2)
			}
		default:
			for ox := range d {
				m := r[ox*k]
				for ky := 0; ky < k; ky++ {
					for _, v := range r[ky*w+ox*k : ky*w+ox*k+k] {
						m = max(m, v)
					}
				}
				d[ox] = m
			}
		}
	}
}
