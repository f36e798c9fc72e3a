package model

import "testing"

func TestForwardFLOPs(t *testing.T) {
	for _, tc := range []struct {
		size int
		want float64
	}{{32, 25.0e6}, {64, 106.9e6}, {96, 259.7e6}} {
		got := DefaultConfig(tc.size, 15).ForwardFLOPs()
		if d := (got - tc.want) / tc.want; d > 0.01 || d < -0.01 {
			t.Errorf("size %d: %.1f MFLOP, ENGINEERING.md says %.1f", tc.size, got/1e6, tc.want/1e6)
		}
	}
}

// KernelFLOPs names every kernel of the net, and nothing else, with a
// positive count.
func TestKernelFLOPs(t *testing.T) {
	cfg := DefaultConfig(64, 15)
	n, err := New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.KernelFLOPs()
	kernels := 0
	for _, p := range n.Params() {
		if v, ok := f[p.Name]; ok != p.Kernel || ok && v <= 0 {
			t.Errorf("%s (kernel %v): %g FLOPs, listed %v", p.Name, p.Kernel, v, ok)
		}
		if p.Kernel {
			kernels++
		}
	}
	if len(f) != kernels {
		t.Errorf("%d layers counted, the net has %d kernels", len(f), kernels)
	}
}
