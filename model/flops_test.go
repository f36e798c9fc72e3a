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
