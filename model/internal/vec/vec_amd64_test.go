//go:build amd64 && !purego

package vec

import "testing"

func setVec(avx, avx2 bool) { hasAVX, hasAVX2 = avx, avx2 }

func TestKernels(t *testing.T) {
	avx, avx2 := hasAVX, hasAVX2
	defer setVec(avx, avx2)
	for _, tt := range []struct {
		avx, avx2 bool
		want      string
	}{{true, true, "avx2"}, {true, false, "avx"}, {false, false, "go"}} {
		setVec(tt.avx, tt.avx2)
		if got := Kernels(); got != tt.want {
			t.Errorf("AVX %v, AVX2 %v: Kernels() = %q, want %q", tt.avx, tt.avx2, got, tt.want)
		}
	}
}
