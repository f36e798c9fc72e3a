package vec

// Reductions in float64 over eight lanes: lane l adds the elements i with
// i mod 8 = l in order (the tail after the last multiple of 8 goes to lane
// 0), and the lanes are combined in a fixed tree. The additions of one lane
// depend on each other, so a single accumulator is bound by the adder's
// latency; eight keep the pipeline full. The order is fixed, so results are
// reproducible, and the vector kernels keep the same lanes.

// combine adds the lanes: ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)).
func combine(l *[8]float64) float64 {
	return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

// SumSq64 returns Σx and Σx².
func SumSq64(x []float32) (sum, sq float64) {
	var s, q [8]float64
	i := sumSqVec(x, &s, &q)
	for ; i+8 <= len(x); i += 8 {
		for l, v := range x[i : i+8 : i+8] {
			a := float64(v)
			s[l] += a
			q[l] += a * a
		}
	}
	for ; i < len(x); i++ {
		a := float64(x[i])
		s[0] += a
		q[0] += a * a
	}
	return combine(&s), combine(&q)
}

// SumDot64 returns Σg and Σg·x.
func SumDot64(g, x []float32) (sum, dot float64) {
	x = x[:len(g)]
	var s, d [8]float64
	i := sumDotVec(g, x, &s, &d)
	for ; i+8 <= len(g); i += 8 {
		for l, v := range g[i : i+8 : i+8] {
			a := float64(v)
			s[l] += a
			d[l] += a * float64(x[i+l])
		}
	}
	for ; i < len(g); i++ {
		a := float64(g[i])
		s[0] += a
		d[0] += a * float64(x[i])
	}
	return combine(&s), combine(&d)
}

// Sum64 returns Σx.
func Sum64(x []float32) float64 {
	var s [8]float64
	i := sumVec(x, &s)
	for ; i+8 <= len(x); i += 8 {
		for l, v := range x[i : i+8 : i+8] {
			s[l] += float64(v)
		}
	}
	for ; i < len(x); i++ {
		s[0] += float64(x[i])
	}
	return combine(&s)
}
