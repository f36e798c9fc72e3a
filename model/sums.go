package model

// Reductions in float64 with four independent accumulators: the additions
// of one accumulator depend on each other, so a single one is bound by the
// adder's latency; four keep the pipeline full. The order of additions is
// fixed, so results are reproducible.

// sumSq64 returns Σx and Σx².
func sumSq64(x []float32) (sum, sq float64) {
	var s0, s1, s2, s3, q0, q1, q2, q3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		a, b, c, d := float64(x[i]), float64(x[i+1]), float64(x[i+2]), float64(x[i+3])
		s0 += a
		s1 += b
		s2 += c
		s3 += d
		q0 += a * a
		q1 += b * b
		q2 += c * c
		q3 += d * d
	}
	for ; i < len(x); i++ {
		a := float64(x[i])
		s0 += a
		q0 += a * a
	}
	return (s0 + s1) + (s2 + s3), (q0 + q1) + (q2 + q3)
}

// sumDot64 returns Σg and Σg·x.
func sumDot64(g, x []float32) (sum, dot float64) {
	x = x[:len(g)]
	var s0, s1, s2, s3, d0, d1, d2, d3 float64
	i := 0
	for ; i+4 <= len(g); i += 4 {
		a, b, c, d := float64(g[i]), float64(g[i+1]), float64(g[i+2]), float64(g[i+3])
		s0 += a
		s1 += b
		s2 += c
		s3 += d
		d0 += a * float64(x[i])
		d1 += b * float64(x[i+1])
		d2 += c * float64(x[i+2])
		d3 += d * float64(x[i+3])
	}
	for ; i < len(g); i++ {
		a := float64(g[i])
		s0 += a
		d0 += a * float64(x[i])
	}
	return (s0 + s1) + (s2 + s3), (d0 + d1) + (d2 + d3)
}

// sum64 returns Σx.
func sum64(x []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += float64(x[i])
		s1 += float64(x[i+1])
		s2 += float64(x[i+2])
		s3 += float64(x[i+3])
	}
	for ; i < len(x); i++ {
		s0 += float64(x[i])
	}
	return (s0 + s1) + (s2 + s3)
}

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
