package model

// sumDotAt64 returns Σg and Σg[o]·x[arg[o]].
func sumDotAt64(g []float32, arg []int32, x []float32) (sum, dot float64) {
	arg = arg[:len(g)]
	var s0, s1, d0, d1 float64
	o := 0
	for ; o+2 <= len(g); o += 2 {
		a, b := float64(g[o]), float64(g[o+1])
		s0 += a
		s1 += b
		d0 += a * float64(x[arg[o]])
		d1 += b * float64(x[arg[o+1]])
	}
	for ; o < len(g); o++ {
		a := float64(g[o])
		s0 += a
		d0 += a * float64(x[arg[o]])
	}
	return s0 + s1, d0 + d1
}
