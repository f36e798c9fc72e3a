//go:build amd64 && !purego

package vec

import "golang.org/x/sys/cpu"

// The vector kernels (vec_amd64.s) run on the longest prefix whose length
// is a multiple of 8 and return that length; the Go loops do the rest (and
// everything on other CPUs and with the purego tag).

var hasAVX, hasAVX2 = cpu.X86.HasAVX, cpu.X86.HasAVX2

func affineVec(out, x []float32, s, t float32) int {
	n := len(out) &^ 7
	if !hasAVX || n == 0 {
		return 0
	}
	affineAVX(out[:n], x[:n], s, t)
	return n
}

func reluBiasVec(out, x []float32, b float32) int {
	n := len(out) &^ 7
	if !hasAVX || n == 0 {
		return 0
	}
	reluBiasAVX(out[:n], x[:n], b)
	return n
}

func maskedAffineVec(out, g, x []float32, a, b, c float32) int {
	n := len(out) &^ 7
	if !hasAVX2 || n == 0 {
		return 0
	}
	maskedAffineAVX2(out[:n], g[:n], x[:n], a, b, c)
	return n
}

func maskedAffine0Vec(out, x []float32, b, c float32) int {
	n := len(out) &^ 7
	if !hasAVX2 || n == 0 {
		return 0
	}
	maskedAffine0AVX2(out[:n], x[:n], b, c)
	return n
}

//go:noescape
func affineAVX(out, x []float32, s, t float32)

//go:noescape
func reluBiasAVX(out, x []float32, b float32)

//go:noescape
func maskedAffineAVX2(out, g, x []float32, a, b, c float32)

//go:noescape
func maskedAffine0AVX2(out, x []float32, b, c float32)

func sumSqVec(x []float32, s, q *[8]float64) int {
	n := len(x) &^ 7
	if !hasAVX || n == 0 {
		return 0
	}
	sumSqAVX(x[:n], s, q)
	return n
}

func sumDotVec(g, x []float32, s, d *[8]float64) int {
	n := len(g) &^ 7
	if !hasAVX || n == 0 {
		return 0
	}
	sumDotAVX(g[:n], x[:n], s, d)
	return n
}

func sumVec(x []float32, s *[8]float64) int {
	n := len(x) &^ 7
	if !hasAVX || n == 0 {
		return 0
	}
	sumAVX(x[:n], s)
	return n
}

//go:noescape
func sumSqAVX(x []float32, s, q *[8]float64)

//go:noescape
func sumDotAVX(g, x []float32, s, d *[8]float64)

//go:noescape
func sumAVX(x []float32, s *[8]float64)
