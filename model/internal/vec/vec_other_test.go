//go:build !amd64 || purego

package vec

func setVec(avx, avx2 bool) {}
