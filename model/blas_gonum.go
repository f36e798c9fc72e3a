//go:build !openblas

package model

// BLAS names the matrix-multiply backend compiled in.
const BLAS = "gonum"

// SetBLASThreads is a no-op for gonum's pure-Go BLAS.
func SetBLASThreads(int) {}

// BLASCore names the matrix-multiply kernels: gonum's pure-Go ones.
func BLASCore() string { return "go" }
