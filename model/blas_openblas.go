//go:build openblas

package model

// #cgo LDFLAGS: -lopenblas
// void openblas_set_num_threads(int);
// char *openblas_get_corename(void);
import "C"

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/netlib/blas/netlib"
)

// BLAS names the matrix-multiply backend compiled in.
const BLAS = "openblas"

// The ops parallelise over images and channels themselves (see parallelFor),
// so OpenBLAS runs single-threaded inside each call: its own threads on top
// would oversubscribe the cores (measured: 112 vs 76 img/s at 64 px on 2
// busy cores). A fixed count also keeps sums in a fixed order.
func init() {
	blas32.Use(netlib.Implementation{})
	SetBLASThreads(1)
}

// SetBLASThreads sets OpenBLAS's thread count.
func SetBLASThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

// BLASCore names the kernels OpenBLAS chose for this CPU (Haswell, SkylakeX,
// Cooperlake, …; the OPENBLAS_CORETYPE environment variable overrides its
// choice).
func BLASCore() string { return C.GoString(C.openblas_get_corename()) }
