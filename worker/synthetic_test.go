package worker

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/optim"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/train"
)

// The synthetic gradient is a pure function of the seed, the step and the
// worker: the same for the same three, different when any differs, and
// small.
func TestSyntheticGradient(t *testing.T) {
	shapes := []int{5, 300, 1}
	fill := func(seed uint64, step int64, worker uint64) [][]float32 {
		g := make([][]float32, len(shapes))
		for i, n := range shapes {
			g[i] = make([]float32, n)
		}
		SyntheticGradient(g, seed, step, worker)
		return g
	}
	equal := func(a, b [][]float32) bool {
		return slices.EqualFunc(a, b, func(x, y []float32) bool { return slices.Equal(x, y) })
	}
	base := fill(1, 3, 7)
	if !equal(base, fill(1, 3, 7)) {
		t.Error("the same seed, step and worker gave different gradients")
	}
	for _, c := range []struct {
		name   string
		seed   uint64
		step   int64
		worker uint64
	}{{"another seed", 2, 3, 7}, {"another step", 1, 4, 7}, {"another worker", 1, 3, 8}} {
		if equal(base, fill(c.seed, c.step, c.worker)) {
			t.Errorf("%s: the same gradient", c.name)
		}
	}
	var sum float64
	for _, g := range base {
		for _, v := range g {
			if v < -1e-3 || v >= 1e-3 || v == 0 {
				t.Fatalf("value %g outside [-1e-3, 1e-3) or zero", v)
			}
			sum += float64(v)
		}
	}
	if mean := sum / 306; math.Abs(mean) > 2e-4 {
		t.Errorf("mean %g, want about 0", mean)
	}
	if slices.Equal(base[0], base[1][:5]) {
		t.Error("two tensors start with the same values")
	}
}

// A synthetic step takes the given time, exchanges every BatchNorm slot
// with the real sizes (forward in layer order, then backward in reverse),
// and pushes the synthetic gradient of the net's real shapes: after it,
// the servers hold exactly the weights the single-process optimizer makes
// from that gradient, pushed after the step or overlapped.
func TestSyntheticStep(t *testing.T) {
	for _, overlap := range []bool{false, true} {
		t.Run(map[bool]string{false: "push after step", true: "overlapped"}[overlap], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := model.DefaultConfig(32, 5)
			const seed, worker, d = 5, 77, 60 * time.Millisecond
			adam := optim.DefaultAdam(3)
			initNet, _ := model.New(cfg, seed)
			spec, initTensors := netspec.Tensors(initNet)
			client := startServers(t, ctx, "run1", spec, adam, initTensors)
			wnet, _ := model.New(cfg, 999)
			w := NewCompute(ComputeConfig{Seed: seed, Sync: true, Overlap: overlap, Synthetic: d, Worker: worker}, wnet, client)
			type call struct{ slot, n int }
			var calls []call
			w.SetBNSync(func(_ context.Context, step int64, slot int, vals []float64) error {
				calls = append(calls, call{slot, len(vals)})
				return nil
			})
			if err := w.Pull(ctx, 0); err != nil {
				t.Fatal(err)
			}
			ref, _ := model.New(cfg, seed)
			opt, pdata, err := train.Optimizer(adam, ref)
			if err != nil {
				t.Fatal(err)
			}
			recs := make([]*shard.Record, 4)
			for step := int64(0); step < 2; step++ {
				calls = calls[:0]
				t0 := time.Now()
				if _, err := w.Step(ctx, step, 0, 0, recs); err != nil {
					t.Fatal(err)
				}
				if el := time.Since(t0); el < d {
					t.Errorf("step %d took %v, want at least %v", step, el, d)
				}
				if w.Version() != step+1 {
					t.Fatalf("step %d: worker holds version %d, want %d", step, w.Version(), step+1)
				}
				grads := make([][]float32, len(ref.Params()))
				for i, p := range ref.Params() {
					grads[i] = make([]float32, len(p.Data))
				}
				SyntheticGradient(grads, seed, step, worker)
				if err := opt.Update(pdata, grads); err != nil {
					t.Fatal(err)
				}
				var want []call
				bn := ref.BN()
				for l := range bn {
					want = append(want, call{2 * l, 1 + 2*len(bn[l].Mean)})
				}
				for l := len(bn) - 1; l >= 0; l-- {
					want = append(want, call{2*l + 1, 2 * len(bn[l].Mean)})
				}
				if !slices.Equal(calls, want) {
					t.Errorf("step %d: batchnorm exchanges (slot, values) %v, want %v", step, calls, want)
				}
			}
			if w.PushBytes == 0 || w.Pushes != 2 {
				t.Errorf("%d bytes in %d pushes, want some in 2", w.PushBytes, w.Pushes)
			}
			_, wt := netspec.Tensors(w.Net())
			_, rt := netspec.Tensors(ref)
			for i := range rt {
				for j := range rt[i] {
					if math.Float32bits(wt[i][j]) != math.Float32bits(rt[i][j]) {
						t.Fatalf("%s[%d]: worker pulled %g, single-process optimizer %g", spec[i].Name, j, wt[i][j], rt[i][j])
					}
				}
			}
		})
	}
}
