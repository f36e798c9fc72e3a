package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/tailorml/tailor/model/internal/vec"
)

// im2col and col2im (one shifted block copy or vector add per kernel
// offset, then the wrapped entries) against the definition, position by
// position, for thin and square planes.
func TestIm2colCol2im(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ c, h, w int }{
		{1, 1, 1}, {2, 1, 3}, {1, 3, 1}, {2, 2, 2}, {3, 5, 6}, {2, 7, 4}, {1, 21, 21},
	} {
		t.Run(fmt.Sprintf("c%d_%dx%d", tc.c, tc.h, tc.w), func(t *testing.T) {
			c, h, w := tc.c, tc.h, tc.w
			p, ld := h*w, h*w+3 // a row stride wider than the plane, as in a group
			x := randData(rng, c*p, 1)
			cols := make([]float32, c*9*ld)
			for i := range cols {
				cols[i] = float32(math.NaN()) // every entry of a row must be written
			}
			im2col(cols, ld, x, c, h, w)
			want := make([]float32, c*p) // col2im of cols by definition
			dcols := randData(rng, len(cols), 1)
			for ci := range c {
				for ky := range 3 {
					for kx := range 3 {
						r := (ci*3+ky)*3 + kx
						for y := range h {
							for xx := range w {
								sy, sx := y+ky-1, xx+kx-1
								var v float32
								inside := sy >= 0 && sy < h && sx >= 0 && sx < w
								if inside {
									v = x[ci*p+sy*w+sx]
									want[ci*p+sy*w+sx] += dcols[r*ld+y*w+xx]
								}
								if got := cols[r*ld+y*w+xx]; got != v {
									t.Fatalf("im2col row %d (y %d, x %d) = %g, want %g", r, y, xx, got, v)
								}
							}
						}
					}
				}
			}
			got := make([]float32, c*p)
			for i := range got {
				got[i] = 99 // overwritten
			}
			col2im(got, dcols, ld, c, h, w)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("col2im[%d] = %g, want %g", i, got[i], want[i])
				}
			}
		})
	}
}

// The fused BatchNorm + max-pool computes what batchNorm → maxPool compute:
// the same pooled output, indices and running statistics, bit for bit, and
// the same gradients up to the order of the float64 sums.
func TestBNPoolMatchesOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct{ n, c, h, w, k int }{
		{4, 3, 9, 9, 3}, {3, 2, 7, 8, 2}, {2, 4, 10, 10, 2}, {2, 2, 64, 64, 3},
	} {
		for _, masked := range []bool{false, true} {
			t.Run(fmt.Sprintf("n%d_c%d_%dx%d_pool%d_masked=%v", tc.n, tc.c, tc.h, tc.w, tc.k, masked), func(t *testing.T) {
				n, c, h, w := tc.n, tc.c, tc.h, tc.w
				shape := tensor.Shape{n, c, h, w}
				xd := randData(rng, shape.TotalSize(), 1)
				if masked { // a ReLU's output
					for i, v := range xd {
						xd[i] = max(v, 0)
					}
				}
				x := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(xd))
				gamma := tensor.New(tensor.WithShape(c), tensor.WithBacking(randData(rng, c, 1)))
				beta := tensor.New(tensor.WithShape(c), tensor.WithBacking(randData(rng, c, 1)))
				newState := func() *bnState {
					return &bnState{mean: make([]float32, c), variance: []float32{1, 1, 1, 1}[:c], momentum: 0.9}
				}
				mode := &runMode{bn: BNTrain}

				stRef, stFused := newState(), newState()
				bn := newBatchNorm(shape, 1e-3, 0, stRef, mode)
				bn.maskInput = masked
				y, err := bn.Do(x, gamma, beta)
				if err != nil {
					t.Fatal(err)
				}
				mp := newMaxPool(n, c, h, w, tc.k)
				wantT, err := mp.Do(y)
				if err != nil {
					t.Fatal(err)
				}
				want := append([]float32(nil), wantT.Data().([]float32)...)

				bp := newBNPool(shape, tc.k, 1e-3, 0, stFused, mode)
				bp.bn.maskInput = masked
				gotT, err := bp.Do(x, gamma, beta)
				if err != nil {
					t.Fatal(err)
				}
				for i, v := range gotT.Data().([]float32) {
					if v != want[i] || bp.arg[i] != mp.arg[i] {
						t.Fatalf("output %d: %g at %d, want %g at %d", i, v, bp.arg[i], want[i], mp.arg[i])
					}
				}
				for ch := range c {
					if stRef.mean[ch] != stFused.mean[ch] || stRef.variance[ch] != stFused.variance[ch] {
						t.Fatalf("running statistics of channel %d differ", ch)
					}
				}

				// backward: pool gradient, then BatchNorm's, against the fused op
				dy := tensor.New(tensor.WithShape(gotT.Shape()...), tensor.WithBacking(randData(rng, gotT.Shape().TotalSize(), 1)))
				mg := &maxPoolGrad{opBase: newOpBase("maxpool_grad", shape, 4), fwd: mp}
				mg.outT, mg.out = newBuf(shape)
				dz, err := mg.Do(dy)
				if err != nil {
					t.Fatal(err)
				}
				ref := &bnGrad{opBase: newOpBase("batchnorm_dx", shape, 4, 1, 4), fwd: bn}
				ref.outT, ref.out = newBuf(shape)
				refSums := ref.enablePlaneSums()
				if _, err := ref.Do(x, gamma, dz); err != nil {
					t.Fatal(err)
				}
				fused := &bnGrad{opBase: newOpBase("batchnorm_maxpool_dx", shape, 4, 1, 4), fwd: bp.bn, pool: bp}
				fused.outT, fused.out = newBuf(shape)
				sums := fused.enablePlaneSums()
				if _, err := fused.Do(x, gamma, dy); err != nil {
					t.Fatal(err)
				}
				closeTo(t, "dx", fused.out, ref.out, 1e-5)
				closeTo(t, "Σdy", f32s(bp.bn.sumDy), f32s(bn.sumDy), 1e-6)
				closeTo(t, "Σdy·x̂", f32s(bp.bn.sumDyXh), f32s(bn.sumDyXh), 1e-5)
				closeTo(t, "plane sums", f32s(sums), f32s(refSums), 1e-5)
				for pl := range n * c { // the plane sums are of the op's own output
					if got, want := sums[pl], vec.Sum64(fused.out[pl*h*w:(pl+1)*h*w]); got != want {
						t.Fatalf("plane %d: sum %g, want %g", pl, got, want)
					}
				}
			})
		}
	}
}

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// closeTo fails unless max |got−want| ≤ tol · max(max |want|, 1).
func closeTo(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	var maxD, maxW float64
	for i := range want {
		maxD = math.Max(maxD, math.Abs(float64(got[i])-float64(want[i])))
		maxW = math.Max(maxW, math.Abs(float64(want[i])))
	}
	if maxD > tol*math.Max(maxW, 1) {
		t.Errorf("%s: max |Δ| %.3g (max |want| %.3g), want ≤ %.0e relative", what, maxD, maxW, tol)
	}
}

// conv → ReLU → BatchNorm + max-pool as the net builds it (conv statistics
// fed to the BatchNorm, the bias gradient from the BatchNorm's plane sums):
// its gradients against central differences.
func TestGradCheckConvBNPool(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	const n, c, h, w, o = 3, 2, 6, 6, 3
	for _, k := range []int{2, 3} {
		t.Run(fmt.Sprintf("pool%d", k), func(t *testing.T) {
			st := &bnState{mean: make([]float32, o), variance: []float32{1, 1, 1}, momentum: 0.99}
			gradCheckGraph(t, "conv_relu_bnpool", func(in G.Nodes) (*G.Node, error) {
				cv := newConv3x3(n, c, h, w, o, true, true)
				cv.gradMasked = true
				cv.stats = make([]float64, 2*n*o)
				y, err := G.ApplyOp(cv, in[0], in[1], in[2])
				if err != nil {
					return nil, err
				}
				bp := newBNPool(tensor.Shape{n, o, h, w}, k, 1e-3, 0, st, &runMode{bn: BNTrain})
				bp.bn.maskInput, bp.bn.preStats = true, cv.stats
				return G.ApplyOp(bp, y, in[3], in[4])
			}, []gcInput{
				{tensor.Shape{n, c, h, w}, randData(rng, n*c*h*w, 1), true},
				{tensor.Shape{o, c, 3, 3}, randData(rng, o*c*9, 0.5), true},
				{tensor.Shape{o}, randData(rng, o, 0.5), true},
				{tensor.Shape{o}, randData(rng, o, 1), true},
				{tensor.Shape{o}, randData(rng, o, 1), true},
			}, reluEps(true), 2e-3, true)
		})
	}
}

// The training graph uses the fused paths: every pool is fused into its
// BatchNorm, every conv BatchNorm takes the conv's plane statistics, and
// every conv bias gradient the BatchNorm gradient's plane sums.
func TestTrainGraphFusesBlocks(t *testing.T) {
	net, err := New(DefaultConfig(32, 5), 1)
	if err != nil {
		t.Fatal(err)
	}
	g, err := net.graph(4, true)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, nd := range g.g.AllNodes() {
		switch op := nd.Op().(type) {
		case *maxPool:
			count["maxpool"]++
		case *bnPool:
			count["bnpool"]++
			if op.bn.preStats == nil {
				t.Errorf("%s: no conv statistics", op.name)
			}
		case *batchNorm:
			if op.s > 1 && op.preStats == nil {
				t.Errorf("%s: no conv statistics", op.name)
			}
		case *biasGrad:
			if op.s > 1 {
				count["conv bias"]++
				if op.pre == nil {
					t.Errorf("conv bias gradient (%d channels) sums its input itself", op.c)
				}
			}
		}
	}
	if count["maxpool"] != 0 || count["bnpool"] != 3 || count["conv bias"] != 5 {
		t.Errorf("graph has %v, want 0 maxpool, 3 bnpool, 5 conv bias gradients", count)
	}
}
