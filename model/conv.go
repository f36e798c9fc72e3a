package model

import (
	"fmt"

	"gonum.org/v1/gonum/blas/gonum"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/tailorml/tailor/model/internal/vec"
)

// gonumBLAS is gonum's pure-Go BLAS, for its assembly vector kernels
// (whatever BLAS the GEMMs use: a cgo call costs more than a short add).
var gonumBLAS gonum.Implementation

// conv3x3 is a 3x3 convolution, stride 1, "same" zero padding, with bias,
// on NCHW float32 tensors: im2col, then one GEMM W(O×C·9) · cols(C·9×P) per
// group of images (see chunking). The columns live in the net's scratch
// memory only while the op runs: the weight gradient recomputes them from
// the input instead of keeping n·C·9·H·W floats from the forward pass.
type conv3x3 struct {
	opBase
	n, c, h, w, o int
	needDX        bool // false for the first layer: nobody wants d(loss)/d(image)
	relu          bool // apply ReLU to the output (fused)
	// gradMasked says the consumer's gradient is already zero where the ReLU
	// was inactive (a BatchNorm with maskInput), so no mask pass is needed.
	gradMasked bool
	sc         *scratch
	// stats, if set (2·n·o floats), receives Σy and Σy² of every output
	// plane, for the BatchNorm after the conv (batchNorm.preStats).
	stats []float64

	outT *tensor.Dense
	out  []float32
}

func newConv3x3(n, c, h, w, o int, needDX, relu bool) *conv3x3 {
	name := "conv3x3"
	if relu {
		name = "conv3x3_relu"
	}
	op := &conv3x3{opBase: newOpBase(name, tensor.Shape{n, o, h, w}, 4, 4, 1), n: n, c: c, h: h, w: w, o: o, needDX: needDX, relu: relu, sc: &scratch{}}
	op.outT, op.out = newBuf(op.out0())
	return op
}

func (op *conv3x3) out0() tensor.Shape { return tensor.Shape{op.n, op.o, op.h, op.w} }

func (op *conv3x3) Do(vals ...G.Value) (G.Value, error) {
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
	k, p := op.c*9, op.h*op.w
	nch, bmax := chunking(op.n, p)
	wk := workers(nch)
	bufs := op.sc.take(wk, k*bmax*p, op.o*bmax*p)
	parallelForWorker(nch, func(wi, ch int) {
		i0, i1 := chunkBounds(ch, nch, op.n)
		cols, y := bufs[2*wi], bufs[2*wi+1]
		if i1-i0 == 1 {
			// one image: the GEMM writes the output in place
			y = op.out[i0*op.o*p : (i0+1)*op.o*p]
		}
		convChunk(cols, y, x, wt, op.c, op.h, op.w, op.o, i0, i1)
		ld := (i1 - i0) * p
		for i := i0; i < i1; i++ {
			for o := 0; o < op.o; o++ {
				// y holds image i's plane o at o·ld + (i−i0)·p; for one
				// image that is the output itself
				src := y[o*ld+(i-i0)*p : o*ld+(i-i0+1)*p]
				dst := op.out[(i*op.o+o)*p : (i*op.o+o+1)*p][:len(src)]
				bias := b[o]
				if op.relu {
					vec.ReluBias(dst, src, bias)
				} else {
					vec.Affine(dst, src, 1, bias) // v·1 is v
				}
				if op.stats != nil {
					pl := i*op.o + o
					op.stats[2*pl], op.stats[2*pl+1] = vec.SumSq64(dst)
				}
			}
		}
	})
	return op.outT, nil
}

// convChunk computes y = W·cols (without the bias, which the callers add
// as they read y) for images [i0, i1) of x: cols (k × B·p) and y (o × B·p)
// hold image i0+j's columns at j·p, B = i1−i0.
func convChunk(cols, y, x, wt []float32, c, h, w, o, i0, i1 int) {
	k, p := c*9, h*w
	ld := (i1 - i0) * p
	for i := i0; i < i1; i++ {
		im2col(cols[(i-i0)*p:], ld, x[i*c*p:(i+1)*c*p], c, h, w)
	}
	sgemm(false, false, o, ld, k, 1, wt, k, cols[:k*ld], ld, 0, y[:o*ld], ld)
}

// gatherChunk lays out the (o × p) planes of images [i0, i1) of dy side by
// side as one o × B·p matrix in g and returns it; for one image it returns
// the image's own plane.
func gatherChunk(g, dy []float32, o, p, i0, i1 int) []float32 {
	if i1-i0 == 1 {
		return dy[i0*o*p : (i0+1)*o*p]
	}
	ld := (i1 - i0) * p
	for i := i0; i < i1; i++ {
		for oc := 0; oc < o; oc++ {
			copy(g[oc*ld+(i-i0)*p:oc*ld+(i-i0+1)*p], dy[(i*o+oc)*p:(i*o+oc+1)*p])
		}
	}
	return g[:o*ld]
}

// minCols is the GEMM width (columns of the im2col matrix) worth reaching by
// putting several images into one GEMM: a 10×10 feature map (64 px, last
// block) alone is 100 columns, too narrow for the GEMM kernel to run at speed,
// and in the weight gradient the 128×1152 result would be read and written
// once per image for only 100 multiply-adds per element.
const minCols = 512

// chunking splits n images of p positions into nch groups of at most bmax
// images (see chunkBounds), aiming at minCols columns per GEMM but keeping at
// least two groups for two goroutines. It depends only on n and p, not on
// the thread count, so every sum is reproducible.
func chunking(n, p int) (nch, bmax int) {
	b := min(max(1, (minCols+p-1)/p), max(1, (n+1)/2))
	nch = (n + b - 1) / b
	return nch, (n + nch - 1) / nch
}

// chunkBounds is the image range [i0, i1) of group ch of nch over n images.
func chunkBounds(ch, nch, n int) (int, int) { return ch * n / nch, (ch + 1) * n / nch }

func (op *conv3x3) DiffWRT(int) []bool { return []bool{op.needDX, true, true} }

func (op *conv3x3) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	x, w := inputs[0], inputs[1]
	var dx *G.Node
	var err error
	if op.relu && !op.gradMasked {
		if grad, err = reluMask(output, grad); err != nil {
			return nil, err
		}
	}
	if op.needDX {
		if dx, err = G.ApplyOp(&convGradInput{opBase: newOpBase("conv3x3_dx", x.Shape(), 4, 4), fwd: op}, w, grad); err != nil {
			return nil, fmt.Errorf("conv dx: %w", err)
		}
	}
	dwOp := &convGradWeight{opBase: newOpBase("conv3x3_dw", w.Shape(), 4, 4), fwd: op}
	dwOp.outT, dwOp.out = newBuf(w.Shape())
	dw, err := G.ApplyOp(dwOp, x, grad)
	if err != nil {
		return nil, fmt.Errorf("conv dw: %w", err)
	}
	dbOp := &biasGrad{opBase: newOpBase("bias_grad", tensor.Shape{op.o}, 4), n: op.n, c: op.o, s: op.h * op.w}
	dbOp.outT, dbOp.out = newBuf(tensor.Shape{op.o})
	if ps, ok := grad.Op().(interface{ enablePlaneSums() []float64 }); ok {
		// the BatchNorm's gradient op sums its output's planes as it
		// writes them
		dbOp.pre = ps.enablePlaneSums()
	}
	db, err := G.ApplyOp(dbOp, grad)
	if err != nil {
		return nil, fmt.Errorf("conv db: %w", err)
	}
	return G.Nodes{dx, dw, db}, nil
}

// convGradInput computes d(loss)/d(input) = col2im(Wᵀ · dY).
type convGradInput struct {
	opBase
	fwd  *conv3x3
	outT *tensor.Dense
	out  []float32
}

func (op *convGradInput) Do(vals ...G.Value) (G.Value, error) {
	f := op.fwd
	k, p := f.c*9, f.h*f.w
	if op.outT == nil {
		op.outT, op.out = newBuf(tensor.Shape{f.n, f.c, f.h, f.w})
	}
	wt, err := f32(vals[0], f.o*f.c*9, "conv weight")
	if err != nil {
		return nil, err
	}
	dy, err := f32(vals[1], f.n*f.o*f.h*f.w, "conv output grad")
	if err != nil {
		return nil, err
	}
	nch, bmax := chunking(f.n, p)
	bufs := f.sc.take(workers(nch), f.o*bmax*p, k*bmax*p)
	parallelForWorker(nch, func(wk, ch int) {
		i0, i1 := chunkBounds(ch, nch, f.n)
		ld := (i1 - i0) * p
		g := gatherChunk(bufs[2*wk], dy, f.o, p, i0, i1)
		dcols := bufs[2*wk+1][:k*ld]
		sgemm(true, false, k, ld, f.o, 1, wt, k, g, ld, 0, dcols, ld)
		for i := i0; i < i1; i++ {
			col2im(op.out[i*f.c*p:(i+1)*f.c*p], dcols[(i-i0)*p:], ld, f.c, f.h, f.w)
		}
	})
	return op.outT, nil
}

// convGradWeight computes d(loss)/d(W) = Σ_images dY · colsᵀ, recomputing the
// columns from the input.
type convGradWeight struct {
	opBase
	gradReady
	fwd  *conv3x3
	outT *tensor.Dense
	out  []float32
	part []float32 // per-worker partial sums
}

func (op *convGradWeight) Do(vals ...G.Value) (G.Value, error) {
	defer op.fire()
	f := op.fwd
	x, err := f32(vals[0], f.n*f.c*f.h*f.w, "conv input")
	if err != nil {
		return nil, err
	}
	dy, err := f32(vals[1], f.n*f.o*f.h*f.w, "conv output grad")
	if err != nil {
		return nil, err
	}
	k, p := f.c*9, f.h*f.w
	// Groups of images are summed in a fixed order so the result does not
	// depend on scheduling: group j goes to partial sum j%2, and the two are
	// added last.
	const parts = 2
	sz := f.o * k
	if op.part == nil {
		op.part = make([]float32, parts*sz)
	}
	nch, bmax := chunking(f.n, p)
	bufs := f.sc.take(parts, k*bmax*p, f.o*bmax*p)
	parallelFor(parts, func(j int) {
		acc := op.part[j*sz : (j+1)*sz]
		cols := bufs[2*j]
		beta := float32(0)
		for ch := j; ch < nch; ch += parts {
			i0, i1 := chunkBounds(ch, nch, f.n)
			ld := (i1 - i0) * p
			for i := i0; i < i1; i++ {
				im2col(cols[(i-i0)*p:], ld, x[i*f.c*p:(i+1)*f.c*p], f.c, f.h, f.w)
			}
			g := gatherChunk(bufs[2*j+1], dy, f.o, p, i0, i1)
			sgemm(false, true, f.o, k, ld, 1, g, ld, cols[:k*ld], ld, beta, acc, k)
			beta = 1
		}
		if beta == 0 {
			clear(acc)
		}
	})
	for i := range op.out {
		op.out[i] = op.part[i] + op.part[sz+i]
	}
	return op.outT, nil
}

// biasGrad sums the output gradient over images and positions, per channel,
// in float64.
type biasGrad struct {
	opBase
	gradReady
	n, c, s int
	outT    *tensor.Dense
	out     []float32
	// pre, if set, holds Σdy of every (image, channel) plane, computed by
	// the op that produced dy (bnGrad.planeSum).
	pre []float64
}

func (op *biasGrad) Do(vals ...G.Value) (G.Value, error) {
	defer op.fire()
	dy, err := f32(vals[0], op.n*op.c*op.s, "bias grad input")
	if err != nil {
		return nil, err
	}
	if op.pre != nil {
		for c := range op.c {
			var sum float64
			for i := 0; i < op.n; i++ {
				sum += op.pre[i*op.c+c]
			}
			op.out[c] = float32(sum)
		}
		return op.outT, nil
	}
	parallelFor(op.c, func(c int) {
		var sum float64
		for i := 0; i < op.n; i++ {
			sum += vec.Sum64(dy[(i*op.c+c)*op.s : (i*op.c+c+1)*op.s])
		}
		op.out[c] = float32(sum)
	})
	return op.outT, nil
}

// im2col lays out the 3x3 "same" neighbourhoods of one CHW image as rows
// (c·9+ky·3+kx) × columns (y·w+x), with zeros outside the image; row r
// starts at cols[r·ld]. Row (ky, kx) is the plane shifted by (ky−1)·w+kx−1
// positions: one contiguous copy of the rows that fall inside, then zeros
// where a shift by a column wrapped around to the next row.
func im2col(cols []float32, ld int, x []float32, c, h, w int) {
	p := h * w
	for ci := 0; ci < c; ci++ {
		plane := x[ci*p : (ci+1)*p]
		for ky := 0; ky < 3; ky++ {
			y0, y1 := max(0, 1-ky), min(h, h+1-ky) // rows whose source row is inside
			for kx := 0; kx < 3; kx++ {
				row := cols[((ci*3+ky)*3+kx)*ld:][:p]
				clear(row[:y0*w])
				clear(row[y1*w:])
				dst, src := shifted(row, plane, y0, y1, ky, kx, w)
				copy(dst, src)
				zeroWrapped(row, y0, y1, kx, w)
			}
		}
	}
}

// shifted returns the parts of row [y0·w, y1·w) and of plane, shifted by
// (ky−1)·w + kx−1, that correspond, clipped to the plane's ends.
func shifted(row, plane []float32, y0, y1, ky, kx, w int) (dst, src []float32) {
	lo, hi := y0*w, y1*w
	s := lo + (ky-1)*w + kx - 1
	if s < 0 { // the first element reads before the plane (wrapped anyway)
		lo, s = lo+1, s+1
	}
	if e := s + hi - lo; e > len(plane) { // the last reads past its end
		hi -= e - len(plane)
	}
	if hi <= lo {
		return nil, nil
	}
	return row[lo:hi], plane[s : s+hi-lo]
}

// zeroWrapped zeroes the entries of rows [y0, y1) of a shifted row whose
// column shift kx−1 took them across a row boundary.
func zeroWrapped(row []float32, y0, y1, kx, w int) {
	switch kx {
	case 0:
		for y := y0; y < y1; y++ {
			row[y*w] = 0
		}
	case 2:
		for y := y0; y < y1; y++ {
			row[y*w+w-1] = 0
		}
	}
}

// col2im is im2col's adjoint: it sums the columns (row r at cols[r·ld])
// back into one CHW image (overwriting dx). It zeroes the wrapped entries
// of the columns (they are scratch) and adds each row to the plane with
// one vector add; every position gets its terms in (ky, kx) order, as a
// loop over positions would add them.
func col2im(dx, cols []float32, ld int, c, h, w int) {
	p := h * w
	clear(dx[:c*p])
	for ci := 0; ci < c; ci++ {
		plane := dx[ci*p : (ci+1)*p]
		for ky := 0; ky < 3; ky++ {
			y0, y1 := max(0, 1-ky), min(h, h+1-ky)
			for kx := 0; kx < 3; kx++ {
				row := cols[((ci*3+ky)*3+kx)*ld:][:p]
				zeroWrapped(row, y0, y1, kx, w)
				src, dst := shifted(row, plane, y0, y1, ky, kx, w)
				addTo(dst, src)
			}
		}
	}
}

// addTo sets dst[i] += src[i] (gonum's SSE kernel: x·1 + y, exact).
func addTo(dst, src []float32) {
	if len(src) > 0 {
		gonumBLAS.Saxpy(len(src), 1, src, 1, dst, 1)
	}
}
