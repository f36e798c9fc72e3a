//go:build !amd64 || purego

package vec

// No vector kernels here: the Go loops do everything.

const hasAVX, hasAVX2 = false, false

func affineVec(out, x []float32, s, t float32) int             { return 0 }
func reluBiasVec(out, x []float32, b float32) int              { return 0 }
func maskedAffineVec(out, g, x []float32, a, b, c float32) int { return 0 }
func maskedAffine0Vec(out, x []float32, b, c float32) int      { return 0 }

func sumSqVec(x []float32, s, q *[8]float64) int     { return 0 }
func sumDotVec(g, x []float32, s, d *[8]float64) int { return 0 }
func sumVec(x []float32, s *[8]float64) int          { return 0 }
