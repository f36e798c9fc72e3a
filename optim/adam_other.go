//go:build !amd64 || purego

package optim

// adamVec has no vector form here: the scalar loop does everything.
func adamVec(p, m, v, g []float32, c *adamConsts) int { return 0 }

const hasVec = false
