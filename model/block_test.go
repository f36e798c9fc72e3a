package model

import (
	"fmt"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The inference block (conv + ReLU + BatchNorm + pool in one op) computes
// exactly what the training ops compute one after another, with running
// statistics and with batch statistics (BNEstimate), for batches that fill
// one GEMM with several images and for one image.
func TestConvBlockMatchesOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		n, c, h, w, o, pool int
	}{
		{7, 3, 9, 9, 5, 3},   // 81 positions: 7 images in two GEMMs of 3 and 4
		{5, 4, 6, 7, 3, 2},   // odd width: the last column is dropped by the pool
		{4, 2, 5, 5, 6, 0},   // no pool
		{1, 3, 12, 12, 4, 2}, // one image (Predict on one image)
		{3, 2, 30, 30, 4, 3}, // 900 positions: one image per GEMM
	} {
		for _, mode := range []BNMode{BNInfer, BNEstimate} {
			t.Run(fmt.Sprintf("n%d_c%d_%dx%d_o%d_pool%d_mode%d", tc.n, tc.c, tc.h, tc.w, tc.o, tc.pool, mode), func(t *testing.T) {
				n, c, h, w, o := tc.n, tc.c, tc.h, tc.w, tc.o
				x := tensor.New(tensor.WithShape(n, c, h, w), tensor.WithBacking(randData(rng, n*c*h*w, 1)))
				wt := tensor.New(tensor.WithShape(o, c, 3, 3), tensor.WithBacking(randData(rng, o*c*9, 0.5)))
				b := tensor.New(tensor.WithShape(o), tensor.WithBacking(randData(rng, o, 0.3)))
				gamma := tensor.New(tensor.WithShape(o), tensor.WithBacking(randData(rng, o, 1)))
				beta := tensor.New(tensor.WithShape(o), tensor.WithBacking(randData(rng, o, 1)))
				newState := func() *bnState {
					st := &bnState{mean: make([]float32, o), variance: make([]float32, o), momentum: 0.99,
						sumMean: make([]float64, o), sumSq: make([]float64, o)}
					for i := range st.mean {
						st.mean[i] = float32(0.2 * (float64(i) - 1))
						st.variance[i] = float32(0.5 + 0.3*float64(i))
					}
					return st
				}
				rm := &runMode{bn: mode}

				// the training ops, one after another
				stOps := newState()
				cv := newConv3x3(n, c, h, w, o, true, true)
				y, err := cv.Do(x, wt, b)
				if err != nil {
					t.Fatal(err)
				}
				bn := newBatchNorm(tensor.Shape{n, o, h, w}, 1e-3, 0, stOps, rm)
				want, err := bn.Do(y, gamma, beta)
				if err != nil {
					t.Fatal(err)
				}
				if tc.pool > 0 {
					if want, err = newMaxPool(n, o, h, w, tc.pool).Do(want); err != nil {
						t.Fatal(err)
					}
				}

				stBlock := newState()
				blk := newConvBlock(n, c, h, w, o, tc.pool, 1e-3, 0, stBlock, rm, &scratch{})
				got, err := blk.Do(x, wt, b, gamma, beta)
				if err != nil {
					t.Fatal(err)
				}
				checkSame(t, "output", got, want)
				if mode == BNEstimate {
					for ch := range o {
						if stBlock.sumMean[ch] != stOps.sumMean[ch] || stBlock.sumSq[ch] != stOps.sumSq[ch] {
							t.Errorf("channel %d: estimated sums %g, %g; the ops' %g, %g", ch, stBlock.sumMean[ch], stBlock.sumSq[ch], stOps.sumMean[ch], stOps.sumSq[ch])
						}
					}
					if stBlock.count != stOps.count {
						t.Errorf("estimate count %g, the ops' %g", stBlock.count, stOps.count)
					}
				}
			})
		}
	}
}

func checkSame(t *testing.T, what string, got, want G.Value) {
	t.Helper()
	g, err := f32(got, -1, what)
	if err != nil {
		t.Fatal(err)
	}
	wv, err := f32(want, len(g), what)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Shape().Eq(want.Shape()) {
		t.Fatalf("%s: shape %v, want %v", what, got.Shape(), want.Shape())
	}
	for i := range g {
		if g[i] != wv[i] {
			t.Fatalf("%s[%d] = %g, want %g (the training ops')", what, i, g[i], wv[i])
		}
	}
}
