//go:build amd64 && !purego

package optim

import "golang.org/x/sys/cpu"

// adamVec runs the Adam update over the longest prefix of p whose length
// is a multiple of 8, eight floats at a time with AVX, and returns that
// length (0 without AVX). The arithmetic is the scalar loop's, operation
// by operation (no fused multiply-add; VSQRTPS rounds as
// float32(math.Sqrt(float64(v))) does), so the results are bit for bit the
// same.
func adamVec(p, m, v, g []float32, c *adamConsts) int {
	if !hasVec {
		return 0
	}
	n := len(p) &^ 7
	if n == 0 {
		return 0
	}
	adamAVX(p[:n], m[:n], v[:n], g[:n], c)
	return n
}

// hasVec: the CPU and the OS support AVX.
var hasVec = cpu.X86.HasAVX

//go:noescape
func adamAVX(p, m, v, g []float32, c *adamConsts)
