package vec

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The vector kernels compute what the Go loops compute, bit for bit, for
// every length (tails included), with zeros, negative values, tiny and
// huge ones.
func TestVecKernelsMatchLoops(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 9))
	vals := func(n int) []float32 {
		d := make([]float32, n)
		for i := range d {
			switch rng.IntN(8) {
			case 0:
				d[i] = 0
			case 1:
				d[i] = float32(rng.NormFloat64() * 1e-30)
			case 2:
				d[i] = float32(rng.NormFloat64() * 1e30)
			default:
				d[i] = float32(rng.NormFloat64())
			}
		}
		return d
	}
	same := func(t *testing.T, what string, n int, got, want []float32) {
		t.Helper()
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s, n %d, element %d: %g (%08x), want %g (%08x)", what, n, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
			}
		}
	}
	a, b, c := float32(0.7), float32(-1.3), float32(0.25)
	for _, n := range []int{0, 1, 7, 8, 9, 17, 64, 441, 4096} {
		x, g := vals(n), vals(n)
		for i := range x[:n/2] { // a ReLU output's half
			x[i] = max(x[i], 0)
		}
		got, want := make([]float32, n), make([]float32, n)

		Affine(got, x, a, c)
		for j, v := range x {
			want[j] = v*a + c
		}
		same(t, "affine", n, got, want)

		ReluBias(got, x, b)
		for j, v := range x {
			want[j] = max(v+b, 0)
		}
		same(t, "reluBias", n, got, want)

		MaskedAffine(got, g, x, a, b, c)
		for j, v := range x {
			want[j] = 0
			if v > 0 {
				want[j] = a*g[j] + b*v + c
			}
		}
		same(t, "maskedAffine", n, got, want)

		MaskedAffine0(got, x, b, c)
		for j, v := range x {
			want[j] = 0
			if v > 0 {
				want[j] = b*v + c
			}
		}
		same(t, "maskedAffine0", n, got, want)
	}
	if hasAVX != hasAVX2 && !hasAVX2 {
		t.Log("no AVX2: the masked kernels ran as Go loops")
	}
}

// NaN propagates through ReLU as through Go's max.
func TestReluBiasNaN(t *testing.T) {
	x := make([]float32, 16)
	x[3], x[12] = float32(math.NaN()), float32(math.NaN())
	out := make([]float32, 16)
	ReluBias(out, x, 1)
	for i, v := range out {
		if isNaN := v != v; isNaN != (i == 3 || i == 12) {
			t.Fatalf("element %d: %g", i, v)
		}
	}
}

// The vector reductions keep the Go loops' lanes: the same sums, bit for
// bit, as the loops alone (with the kernels off).
func TestSumsMatchLoops(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 1))
	for _, n := range []int{0, 1, 7, 8, 9, 23, 64, 441, 4097} {
		x, g := make([]float32, n), make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(13)-6)))
			g[i] = float32(rng.NormFloat64())
		}
		s1, q1 := SumSq64(x)
		d1s, d1 := SumDot64(g, x)
		a1 := Sum64(x)
		saved, saved2 := hasAVX, hasAVX2
		setVec(false, false)
		s2, q2 := SumSq64(x)
		d2s, d2 := SumDot64(g, x)
		a2 := Sum64(x)
		setVec(saved, saved2)
		if s1 != s2 || q1 != q2 || d1s != d2s || d1 != d2 || a1 != a2 {
			t.Fatalf("n %d: vector %v %v %v %v %v, loops %v %v %v %v %v", n, s1, q1, d1s, d1, a1, s2, q2, d2s, d2, a2)
		}
		// and they are the sums, up to float64 rounding
		var ws, wq float64
		for _, v := range x {
			ws += float64(v)
			wq += float64(v) * float64(v)
		}
		if math.Abs(s1-ws) > 1e-9*(math.Abs(ws)+wq) || math.Abs(q1-wq) > 1e-12*wq {
			t.Fatalf("n %d: Σx %v Σx² %v, want %v %v", n, s1, q1, ws, wq)
		}
	}
}
