package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// weightedSum is a test loss: Σ r_i·x_i, whose gradient is r.
type weightedSum struct {
	opBase
	r    []float32
	last float64
}

func (op *weightedSum) Do(vals ...G.Value) (G.Value, error) {
	x, err := f32(vals[0], len(op.r), "x")
	if err != nil {
		return nil, err
	}
	var s float64
	for i, v := range x {
		s += float64(v) * float64(op.r[i])
	}
	op.last = s
	return G.NewF32(float32(s)), nil
}
func (op *weightedSum) DiffWRT(int) []bool { return []bool{true} }
func (op *weightedSum) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	g := &constGrad{opBase: newOpBase("const_grad", inputs[0].Shape(), 0), r: op.r}
	g.outT, g.out = newBuf(inputs[0].Shape())
	dx, err := G.ApplyOp(g, grad)
	return G.Nodes{dx}, err
}

type constGrad struct {
	opBase
	r    []float32
	outT *tensor.Dense
	out  []float32
}

func (op *constGrad) Do(vals ...G.Value) (G.Value, error) {
	g, err := scalarOf(vals[0])
	if err != nil {
		return nil, err
	}
	for i, v := range op.r {
		op.out[i] = g * v
	}
	return op.outT, nil
}

type gcInput struct {
	shape tensor.Shape
	data  []float32
	diff  bool
}

// gradCheck builds loss = Σ r·op(inputs), differentiates it with gorgonia and
// compares every differentiable input's gradient with central differences.
func gradCheck(t *testing.T, name string, mk func() G.Op, ins []gcInput, eps, tol float64, kinky bool) {
	t.Helper()
	gradCheckGraph(t, name, func(in G.Nodes) (*G.Node, error) { return G.ApplyOp(mk(), in...) }, ins, eps, tol, kinky)
}

// gradCheckGraph is gradCheck for a small graph of ops built by mk.
// kinky says the function has kinks (ReLU): coordinates whose ±eps straddles
// one are detected and skipped.
func gradCheckGraph(t *testing.T, name string, mk func(G.Nodes) (*G.Node, error), ins []gcInput, eps, tol float64, kinky bool) {
	t.Helper()
	g := G.NewGraph()
	var nodes, wrt G.Nodes
	for i, in := range ins {
		tt := tensor.New(tensor.WithShape(in.shape...), tensor.WithBacking(in.data))
		n := G.NewTensor(g, tensor.Float32, len(in.shape), G.WithShape(in.shape...), G.WithName(string(rune('a'+i))), G.WithValue(tt))
		nodes = append(nodes, n)
		if in.diff {
			wrt = append(wrt, n)
		}
	}
	out, err := mk(nodes)
	if err != nil {
		t.Fatalf("%s: apply: %v", name, err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	r := make([]float32, out.Shape().TotalSize())
	for i := range r {
		r[i] = float32(rng.NormFloat64())
	}
	ws := &weightedSum{opBase: newOpBase("wsum", tensor.ScalarShape(), len(out.Shape())), r: r}
	loss, err := G.ApplyOp(ws, out)
	if err != nil {
		t.Fatalf("%s: loss: %v", name, err)
	}
	grads, err := G.Grad(loss, wrt...)
	if err != nil {
		t.Fatalf("%s: grad: %v", name, err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	run := func() float64 {
		if err := vm.RunAll(); err != nil {
			t.Fatalf("%s: run: %v", name, err)
		}
		vm.Reset()
		return ws.last
	}
	base := run()
	analytic := make([][]float32, len(grads))
	for i, gn := range grads {
		d, err := f32(gn.Value(), -1, "grad")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		analytic[i] = append([]float32(nil), d...)
	}
	k := 0
	for _, in := range ins {
		if !in.diff {
			continue
		}
		a := analytic[k]
		k++
		var maxA float64
		for _, v := range a {
			maxA = math.Max(maxA, math.Abs(float64(v)))
		}
		var maxErr, maxRef float64
		kinks := 0
		for j := range in.data {
			orig := in.data[j]
			in.data[j] = orig + float32(eps)
			up := run()
			in.data[j] = orig - float32(eps)
			down := run()
			in.data[j] = orig
			// Where ±eps straddles a kink (ReLU at 0, a max-pool tie), the
			// one-sided slopes differ and central differences mean nothing:
			// skip the coordinate, and fail if that happens often.
			right, left := (up-base)/eps, (base-down)/eps
			if kinky && math.Abs(right-left) > tol*maxA {
				kinks++
				continue
			}
			num := (up - down) / (2 * eps)
			maxErr = math.Max(maxErr, math.Abs(num-float64(a[j])))
			maxRef = math.Max(maxRef, math.Abs(num))
		}
		if kinks > max(1, len(in.data)/5) {
			t.Errorf("%s: input %d: %d of %d coordinates sit on a kink; choose other data", name, k-1, kinks, len(in.data))
		}
		if rel := maxErr / math.Max(maxRef, 1e-6); rel > tol {
			t.Errorf("%s: input %d: max |numeric − analytic| / max |numeric| = %.2e, want ≤ %.0e", name, k-1, rel, tol)
		} else {
			t.Logf("%s: input %d: relative error %.2e (%d kinks skipped)", name, k-1, rel, kinks)
		}
	}
}

func randData(rng *rand.Rand, n int, scale float64) []float32 {
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(rng.NormFloat64() * scale)
	}
	return d
}

// awayFromZero pushes values away from a kink at 0 so central differences
// do not straddle it.
func awayFromZero(d []float32, gap float32) []float32 {
	for i, v := range d {
		if v >= 0 && v < gap {
			d[i] = v + gap
		} else if v < 0 && v > -gap {
			d[i] = v - gap
		}
	}
	return d
}

// reluEps is the finite-difference step: smaller through a ReLU, so that few
// coordinates straddle its kink (those that do are detected and skipped).
func reluEps(relu bool) float64 {
	if relu {
		return 1e-3
	}
	return 1e-2
}

func TestGradCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const eps, tol = 1e-2, 2e-3
	n, c, h, w, o := 2, 3, 5, 6, 4
	for _, relu := range []bool{false, true} {
		t.Run(fmt.Sprintf("conv3x3_relu=%v", relu), func(t *testing.T) {
			gradCheck(t, "conv3x3", func() G.Op { return newConv3x3(n, c, h, w, o, true, relu) }, []gcInput{
				{tensor.Shape{n, c, h, w}, randData(rng, n*c*h*w, 1), true},
				{tensor.Shape{o, c, 3, 3}, randData(rng, o*c*9, 0.5), true},
				{tensor.Shape{o}, randData(rng, o, 0.5), true},
			}, reluEps(relu), tol, relu)
		})
	}
	// Several images per GEMM (small feature maps): 6 images of 4×5 go in two
	// groups of 3 (see chunking).
	t.Run("conv3x3_grouped", func(t *testing.T) {
		const n, h, w = 6, 4, 5
		if nch, b := chunking(n, h*w); nch != 2 || b != 3 {
			t.Fatalf("chunking(%d, %d) = %d groups of %d, want 2 of 3", n, h*w, nch, b)
		}
		gradCheck(t, "conv3x3", func() G.Op { return newConv3x3(n, c, h, w, o, true, false) }, []gcInput{
			{tensor.Shape{n, c, h, w}, randData(rng, n*c*h*w, 1), true},
			{tensor.Shape{o, c, 3, 3}, randData(rng, o*c*9, 0.5), true},
			{tensor.Shape{o}, randData(rng, o, 0.5), true},
		}, eps, tol, false)
	})
	// The net's fused block: conv+ReLU whose gradient mask is applied by the
	// BatchNorm after it.
	t.Run("conv3x3_relu_batchnorm_fused", func(t *testing.T) {
		st := &bnState{mean: make([]float32, o), variance: []float32{1, 1, 1, 1}, momentum: 0.99}
		gradCheckGraph(t, "conv_relu_bn", func(in G.Nodes) (*G.Node, error) {
			cv := newConv3x3(n, c, h, w, o, true, true)
			cv.gradMasked = true
			y, err := G.ApplyOp(cv, in[0], in[1], in[2])
			if err != nil {
				return nil, err
			}
			bn := newBatchNorm(tensor.Shape{n, o, h, w}, 1e-3, 0, st, &runMode{bn: BNTrain})
			bn.maskInput = true
			return G.ApplyOp(bn, y, in[3], in[4])
		}, []gcInput{
			{tensor.Shape{n, c, h, w}, randData(rng, n*c*h*w, 1), true},
			{tensor.Shape{o, c, 3, 3}, randData(rng, o*c*9, 0.5), true},
			{tensor.Shape{o}, randData(rng, o, 0.5), true},
			{tensor.Shape{o}, randData(rng, o, 1), true},
			{tensor.Shape{o}, randData(rng, o, 1), true},
		}, reluEps(true), tol, true)
	})
	t.Run("dense_relu_batchnorm_fused", func(t *testing.T) {
		st := &bnState{mean: make([]float32, 4), variance: []float32{1, 1, 1, 1}, momentum: 0.99}
		gradCheckGraph(t, "dense_relu_bn", func(in G.Nodes) (*G.Node, error) {
			d := newDense(6, 5, 4, true)
			d.gradMasked = true
			y, err := G.ApplyOp(d, in[0], in[1], in[2])
			if err != nil {
				return nil, err
			}
			bn := newBatchNorm(tensor.Shape{6, 4}, 1e-3, 0, st, &runMode{bn: BNTrain})
			bn.maskInput = true
			return G.ApplyOp(bn, y, in[3], in[4])
		}, []gcInput{
			{tensor.Shape{6, 5}, randData(rng, 30, 1), true},
			{tensor.Shape{5, 4}, randData(rng, 20, 1), true},
			{tensor.Shape{4}, randData(rng, 4, 0.5), true},
			{tensor.Shape{4}, randData(rng, 4, 1), true},
			{tensor.Shape{4}, randData(rng, 4, 1), true},
		}, reluEps(true), tol, true)
	})
	t.Run("relu", func(t *testing.T) {
		s := tensor.Shape{n, c, h, w}
		gradCheck(t, "relu", func() G.Op { return newReLU(s) }, []gcInput{
			{s, awayFromZero(randData(rng, s.TotalSize(), 1), 0.05), true},
		}, eps, tol, false)
	})
	for _, mode := range []struct {
		name string
		bn   BNMode
	}{{"batchnorm4d_train", BNTrain}, {"batchnorm4d_infer", BNInfer}} {
		t.Run(mode.name, func(t *testing.T) {
			s := tensor.Shape{n, c, h, w}
			st := &bnState{mean: []float32{0.1, -0.2, 0.3}, variance: []float32{1.5, 0.7, 2}, momentum: 0.99}
			gradCheck(t, mode.name, func() G.Op { return newBatchNorm(s, 1e-3, 0, st, &runMode{bn: mode.bn}) }, []gcInput{
				{s, randData(rng, s.TotalSize(), 2), true},
				{tensor.Shape{c}, randData(rng, c, 1), true},
				{tensor.Shape{c}, randData(rng, c, 1), true},
			}, eps, tol, false)
		})
	}
	t.Run("batchnorm2d", func(t *testing.T) {
		s := tensor.Shape{6, 5}
		st := &bnState{mean: make([]float32, 5), variance: []float32{1, 1, 1, 1, 1}, momentum: 0.99}
		gradCheck(t, "batchnorm2d", func() G.Op { return newBatchNorm(s, 1e-3, 0, st, &runMode{bn: BNTrain}) }, []gcInput{
			{s, randData(rng, 30, 1), true},
			{tensor.Shape{5}, randData(rng, 5, 1), true},
			{tensor.Shape{5}, randData(rng, 5, 1), true},
		}, eps, tol, false)
	})
	for _, k := range []int{2, 3} {
		t.Run(fmt.Sprintf("maxpool%d", k), func(t *testing.T) {
			// distinct values spaced well apart, so the argmax is stable under ±eps
			s := tensor.Shape{n, c, 7, 8}
			d := make([]float32, s.TotalSize())
			for i, p := range rng.Perm(len(d)) {
				d[i] = float32(p) * 0.1
			}
			gradCheck(t, "maxpool", func() G.Op { return newMaxPool(n, c, 7, 8, k) }, []gcInput{{s, d, true}}, eps, tol, false)
		})
	}
	t.Run("dropout", func(t *testing.T) {
		s := tensor.Shape{n, c, h, w}
		mode := &runMode{dropout: true, seed: 3, step: 9}
		op := newDropout(s, 0.4, 1, mode)
		gradCheck(t, "dropout", func() G.Op { return op }, []gcInput{{s, randData(rng, s.TotalSize(), 1), true}}, eps, tol, false)
		kept := 0
		for _, m := range op.mask {
			switch m {
			case 0:
			case float32(1 / 0.6):
				kept++
			default:
				t.Fatalf("mask value %g, want 0 or 1/(1-p) = %g", m, 1/0.6)
			}
		}
		if kept == 0 || kept == len(op.mask) {
			t.Errorf("dropout kept %d of %d units", kept, len(op.mask))
		}
	})
	for _, relu := range []bool{false, true} {
		t.Run(fmt.Sprintf("dense_relu=%v", relu), func(t *testing.T) {
			gradCheck(t, "dense", func() G.Op { return newDense(3, 5, 4, relu) }, []gcInput{
				{tensor.Shape{3, 5}, randData(rng, 15, 1), true},
				{tensor.Shape{5, 4}, randData(rng, 20, 1), true},
				{tensor.Shape{4}, randData(rng, 4, 1), true},
			}, reluEps(relu), tol, relu)
		})
	}
	t.Run("flatten", func(t *testing.T) {
		s := tensor.Shape{2, 3, 2, 2}
		gradCheck(t, "flatten", func() G.Op { return newFlatten(2, 12, 4) }, []gcInput{{s, randData(rng, 24, 1), true}}, eps, tol, false)
	})
}

// The loss op is checked on its own: its output is already a scalar; with
// and without positive weights.
func TestGradCheckBCE(t *testing.T) {
	for _, w := range [][]float32{nil, {1, 3, 0.5, 10, 1.7}} {
		rng := rand.New(rand.NewPCG(3, 4))
		n, l := 4, 5
		z := randData(rng, n*l, 3)
		y := make([]float32, n*l)
		for i := range y {
			if rng.IntN(2) == 1 {
				y[i] = 1
			}
		}
		g := G.NewGraph()
		zt := tensor.New(tensor.WithShape(n, l), tensor.WithBacking(z))
		yt := tensor.New(tensor.WithShape(n, l), tensor.WithBacking(y))
		zn := G.NewTensor(g, tensor.Float32, 2, G.WithShape(n, l), G.WithName("z"), G.WithValue(zt))
		yn := G.NewTensor(g, tensor.Float32, 2, G.WithShape(n, l), G.WithName("y"), G.WithValue(yt))
		op := newBCELoss(n, l, &runMode{posWeight: w})
		loss, err := G.ApplyOp(op, zn, yn)
		if err != nil {
			t.Fatal(err)
		}
		grads, err := G.Grad(loss, zn)
		if err != nil {
			t.Fatal(err)
		}
		vm := G.NewTapeMachine(g)
		run := func() float64 {
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			vm.Reset()
			return op.loss
		}
		run()
		a, _ := f32(grads[0].Value(), n*l, "grad")
		a = append([]float32(nil), a...)
		const eps = 1e-3
		for i := range z {
			orig := z[i]
			z[i] = orig + eps
			up := run()
			z[i] = orig - eps
			down := run()
			z[i] = orig
			num := (up - down) / (2 * eps)
			if d := math.Abs(num - float64(a[i])); d > 1e-4 {
				t.Errorf("pos weights %v: dz[%d]: numeric %g, analytic %g", w, i, num, a[i])
			}
		}
		vm.Close()
	}
	// Numerically safe at extreme logits: no Inf or NaN, the right limits.
	for _, tc := range []struct {
		z, y, want float64
		p          []float32
	}{{100, 1, 0, nil}, {-100, 0, 0, nil}, {100, 0, 100, nil}, {-100, 1, 100, nil}, {0, 1, math.Ln2, nil},
		{-100, 1, 300, []float32{3}}, {100, 0, 100, []float32{3}}, {0, 1, 3 * math.Ln2, []float32{3}}, {0, 0, math.Ln2, []float32{3}}} {
		op := newBCELoss(1, 1, &runMode{posWeight: tc.p})
		v, err := op.Do(tensor.New(tensor.WithShape(1, 1), tensor.WithBacking([]float32{float32(tc.z)})), tensor.New(tensor.WithShape(1, 1), tensor.WithBacking([]float32{float32(tc.y)})))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := scalarOf(v)
		if math.Abs(float64(got)-tc.want) > 1e-5 {
			t.Errorf("bce(z=%g, y=%g) = %g, want %g", tc.z, tc.y, got, tc.want)
		}
	}
}
