package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// conv3x3 is a 3x3 convolution, stride 1, "same" zero padding, with bias,
// on NCHW float32 tensors. Forward: im2col per image, then one GEMM
// W(O×C·9) · cols(C·9×H·W). The columns are kept for the weight gradient.
type conv3x3 struct {
	opBase
	n, c, h, w, o int
	needDX        bool // false for the first layer: nobody wants d(loss)/d(image)
	relu          bool // apply ReLU to the output (fused)
	// gradMasked says the consumer's gradient is already zero where the ReLU
	// was inactive (a BatchNorm with maskInput), so no mask pass is needed.
	gradMasked bool

	outT *tensor.Dense
	out  []float32
	cols []float32 // n × (c·9) × (h·w)
}

func newConv3x3(n, c, h, w, o int, needDX, relu bool) *conv3x3 {
	name := "conv3x3"
	if relu {
		name = "conv3x3_relu"
	}
	op := &conv3x3{opBase: newOpBase(name, tensor.Shape{n, o, h, w}, 4, 4, 1), n: n, c: c, h: h, w: w, o: o, needDX: needDX, relu: relu}
	op.outT, op.out = newBuf(op.out0())
	op.cols = make([]float32, n*c*9*h*w)
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
	parallelFor(op.n, func(i int) {
		cols := op.cols[i*k*p : (i+1)*k*p]
		im2col(cols, x[i*op.c*p:(i+1)*op.c*p], op.c, op.h, op.w)
		y := op.out[i*op.o*p : (i+1)*op.o*p]
		for o := 0; o < op.o; o++ {
			row := y[o*p : (o+1)*p]
			for j := range row {
				row[j] = b[o]
			}
		}
		sgemm(false, false, op.o, p, k, 1, wt, k, cols, p, 1, y, p)
		if op.relu {
			for j, v := range y {
				y[j] = max(v, 0)
			}
		}
	})
	return op.outT, nil
}

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
	db, err := G.ApplyOp(dbOp, grad)
	if err != nil {
		return nil, fmt.Errorf("conv db: %w", err)
	}
	return G.Nodes{dx, dw, db}, nil
}

// convGradInput computes d(loss)/d(input) = col2im(Wᵀ · dY).
type convGradInput struct {
	opBase
	fwd   *conv3x3
	outT  *tensor.Dense
	out   []float32
	dcols []float32
}

func (op *convGradInput) Do(vals ...G.Value) (G.Value, error) {
	f := op.fwd
	k, p := f.c*9, f.h*f.w
	if op.outT == nil {
		op.outT, op.out = newBuf(tensor.Shape{f.n, f.c, f.h, f.w})
		// scratch columns per goroutine, not per image
		op.dcols = make([]float32, workers(f.n)*k*p)
	}
	wt, err := f32(vals[0], f.o*f.c*9, "conv weight")
	if err != nil {
		return nil, err
	}
	dy, err := f32(vals[1], f.n*f.o*f.h*f.w, "conv output grad")
	if err != nil {
		return nil, err
	}
	parallelForWorker(f.n, func(wk, i int) {
		dcols := op.dcols[wk*k*p : (wk+1)*k*p]
		sgemm(true, false, k, p, f.o, 1, wt, k, dy[i*f.o*p:(i+1)*f.o*p], p, 0, dcols, p)
		col2im(op.out[i*f.c*p:(i+1)*f.c*p], dcols, f.c, f.h, f.w)
	})
	return op.outT, nil
}

// convGradWeight computes d(loss)/d(W) = Σ_images dY · colsᵀ, from the columns
// the forward pass kept.
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
	dy, err := f32(vals[1], f.n*f.o*f.h*f.w, "conv output grad")
	if err != nil {
		return nil, err
	}
	k, p := f.c*9, f.h*f.w
	// Images are summed in a fixed order so the result does not depend on
	// scheduling: image i goes to partial sum i%2, and the two are added last.
	const parts = 2
	sz := f.o * k
	if op.part == nil {
		op.part = make([]float32, parts*sz)
	}
	parallelFor(parts, func(j int) {
		acc := op.part[j*sz : (j+1)*sz]
		beta := float32(0)
		for i := j; i < f.n; i += parts {
			sgemm(false, true, f.o, k, p, 1, dy[i*f.o*p:(i+1)*f.o*p], p, f.cols[i*k*p:(i+1)*k*p], p, beta, acc, k)
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
}

func (op *biasGrad) Do(vals ...G.Value) (G.Value, error) {
	defer op.fire()
	dy, err := f32(vals[0], op.n*op.c*op.s, "bias grad input")
	if err != nil {
		return nil, err
	}
	parallelFor(op.c, func(c int) {
		var sum float64
		for i := 0; i < op.n; i++ {
			sum += sum64(dy[(i*op.c+c)*op.s : (i*op.c+c+1)*op.s])
		}
		op.out[c] = float32(sum)
	})
	return op.outT, nil
}

// im2col lays out the 3x3 "same" neighbourhoods of one CHW image as rows
// (c·9+ky·3+kx) × columns (y·w+x), with zeros outside the image.
func im2col(cols, x []float32, c, h, w int) {
	p := h * w
	for ci := 0; ci < c; ci++ {
		plane := x[ci*p : (ci+1)*p]
		for ky := 0; ky < 3; ky++ {
			for kx := 0; kx < 3; kx++ {
				row := cols[((ci*3+ky)*3+kx)*p : ((ci*3+ky)*3+kx+1)*p]
				dx := kx - 1
				for y := 0; y < h; y++ {
					sy := y + ky - 1
					dst := row[y*w : (y+1)*w]
					if sy < 0 || sy >= h {
						clear(dst)
						continue
					}
					src := plane[sy*w : (sy+1)*w]
					switch dx {
					case -1:
						dst[0] = 0
						copy(dst[1:], src[:w-1])
					case 0:
						copy(dst, src)
					case 1:
						copy(dst[:w-1], src[1:])
						dst[w-1] = 0
					}
				}
			}
		}
	}
}

// col2im is im2col's adjoint: it sums the columns back into one CHW image
// (overwriting dx).
func col2im(dx, cols []float32, c, h, w int) {
	p := h * w
	clear(dx[:c*p])
	for ci := 0; ci < c; ci++ {
		plane := dx[ci*p : (ci+1)*p]
		for ky := 0; ky < 3; ky++ {
			for kx := 0; kx < 3; kx++ {
				row := cols[((ci*3+ky)*3+kx)*p : ((ci*3+ky)*3+kx+1)*p]
				dxo := kx - 1
				for y := 0; y < h; y++ {
					sy := y + ky - 1
					if sy < 0 || sy >= h {
						continue
					}
					src := row[y*w : (y+1)*w]
					dst := plane[sy*w : (sy+1)*w]
					switch dxo {
					case -1:
						for j := 1; j < w; j++ {
							dst[j-1] += src[j]
						}
					case 0:
						for j := 0; j < w; j++ {
							dst[j] += src[j]
						}
					case 1:
						for j := 0; j < w-1; j++ {
							dst[j+1] += src[j]
						}
					}
				}
			}
		}
	}
}
