package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/tailorml/tailor/model/internal/vec"
)

// bnPool is BatchNorm followed by a k×k, stride-k max-pool, for training.
// Each (image, channel) plane is normalised into a small buffer and pooled
// from there while it is in cache, so the normalised activations (the
// largest tensor of the net at the first block) are never written out; the
// op keeps only the pooled output and the index of each maximum. Its
// gradient (bnGrad with pool set) likewise never builds the BatchNorm
// output's gradient, which is zero but at the maxima. It computes exactly
// what batchNorm → maxPool compute: the same affine map in float32, the
// same argmax rule.
type bnPool struct {
	opBase
	bn     *batchNorm // statistics, affine map, synchronisation; bn.out is unused
	k      int
	oh, ow int
	outT   *tensor.Dense
	out    []float32
	arg    []int32   // index into the input plane of each output's maximum
	tmp    []float32 // one normalised plane per goroutine
}

func newBNPool(shape tensor.Shape, k int, eps float64, layer int, st *bnState, mode *runMode) *bnPool {
	n, c, h, w := shape[0], shape[1], shape[2], shape[3]
	oh, ow := (h-k)/k+1, (w-k)/k+1
	op := &bnPool{opBase: newOpBase(fmt.Sprintf("batchnorm_maxpool%d", k), tensor.Shape{n, c, oh, ow}, 4, 1, 1), k: k, oh: oh, ow: ow}
	op.bn = newBatchNorm(shape, eps, layer, st, mode)
	op.bn.outT, op.bn.out = nil, nil
	op.outT, op.out = newBuf(op.out0())
	op.arg = make([]int32, len(op.out))
	return op
}

func (op *bnPool) Do(vals ...G.Value) (G.Value, error) {
	f := op.bn
	x, gamma, beta, err := f.start(vals)
	if err != nil {
		return nil, err
	}
	planes, ip, opl := f.n*f.c, f.s, op.oh*op.ow
	w := f.shape[3]
	if need := workers(planes) * ip; len(op.tmp) < need {
		op.tmp = make([]float32, need)
	}
	parallelForWorker(planes, func(wk, pl int) {
		scale, shift := f.affine(pl%f.c, gamma, beta)
		t := op.tmp[wk*ip : (wk+1)*ip]
		vec.Affine(t, x[pl*ip:(pl+1)*ip], scale, shift)
		out, arg := op.out[pl*opl:(pl+1)*opl], op.arg[pl*opl:(pl+1)*opl]
		switch op.k {
		case 2:
			pool2Arg(out, arg, t, w, op.oh, op.ow)
		case 3:
			pool3Arg(out, arg, t, w, op.oh, op.ow)
		default:
			poolArg(out, arg, t, w, op.k, op.oh, op.ow)
		}
	})
	return op.outT, nil
}

func (op *bnPool) DiffWRT(int) []bool { return []bool{true, true, true} }

func (op *bnPool) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	return bnGradNodes(op.bn, op, inputs[0], inputs[1], grad)
}
