//go:build openblas

package model

// #cgo LDFLAGS: -lopenblas
// void openblas_set_num_threads(int);
import "C"

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/netlib/blas/netlib"
)

// BLAS names the matrix-multiply backend compiled in.
const BLAS = "openblas"

func init() { blas32.Use(netlib.Implementation{}) }

// SetBLASThreads fixes OpenBLAS's thread count (a fixed count keeps sums in a
// fixed order, so results are reproducible).
func SetBLASThreads(n int) { C.openblas_set_num_threads(C.int(n)) }
