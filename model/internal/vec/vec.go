// Package vec holds the element-wise float32 loops of the model's layers.
// On amd64 a vector kernel (AVX, AVX2; vec_amd64.s) does the longest
// multiple-of-8 prefix with the same operations in the same order as the Go
// loop, which does the rest, so results do not depend on which ran. It is a
// package of its own because Go assembly cannot live in a package that uses
// cgo (model, with OpenBLAS).
package vec

import "math"

// Affine sets out = x·s + t (x may be out).
func Affine(out, x []float32, s, t float32) {
	x = x[:len(out)]
	for j := affineVec(out, x, s, t); j < len(out); j++ {
		out[j] = x[j]*s + t
	}
}

// ReluBias sets out = max(x+b, 0) (x may be out). The vector kernel keeps
// a −0 sum as −0 where Go's max gives +0 (they compare equal; x+b is −0
// only if b is).
func ReluBias(out, x []float32, b float32) {
	x = x[:len(out)]
	for j := reluBiasVec(out, x, b); j < len(out); j++ {
		out[j] = max(x[j]+b, 0)
	}
}

// MaskedAffine sets out = a·g + b·x + c where x > 0, and 0 elsewhere. x is a
// ReLU's output, so about half its values are 0 in no pattern a branch
// predictor could learn: the select is done with a bit mask instead (x > 0
// exactly when its bits, as a signed integer, are positive; x is never −0,
// and a NaN x is the only case where this differs from the branch).
func MaskedAffine(out, g, x []float32, a, b, c float32) {
	x = x[:len(g)]
	out = out[:len(g)]
	for j := maskedAffineVec(out, g, x, a, b, c); j < len(g); j++ {
		v := x[j]
		r := math.Float32bits(a*g[j] + b*v + c)
		var m uint32
		if int32(math.Float32bits(v)) > 0 {
			m = ^uint32(0)
		}
		out[j] = math.Float32frombits(r & m)
	}
}

// MaskedAffine0 is MaskedAffine with g = 0: out = b·x + c where x > 0,
// else 0.
func MaskedAffine0(out, x []float32, b, c float32) {
	x = x[:len(out)]
	for j := maskedAffine0Vec(out, x, b, c); j < len(out); j++ {
		v := x[j]
		r := math.Float32bits(b*v + c)
		var m uint32
		if int32(math.Float32bits(v)) > 0 {
			m = ^uint32(0)
		}
		out[j] = math.Float32frombits(r & m)
	}
}

// Kernels names the element-wise kernels this process runs, as chosen at
// start from the CPU's features (golang.org/x/sys/cpu, which also checks
// that the OS saves the YMM registers): "avx2" (every vector kernel),
// "avx" (the AVX ones; MaskedAffine and MaskedAffine0 run the Go loops) or
// "go" (no vector kernels: another architecture, the purego build tag, or a
// CPU without AVX). The results are the same bits whichever runs.
func Kernels() string {
	switch {
	case hasAVX && hasAVX2:
		return "avx2"
	case hasAVX:
		return "avx"
	}
	return "go"
}
