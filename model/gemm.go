package model

import (
	"runtime"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// sgemm computes C = alpha*op(A)*op(B) + beta*C on row-major matrices, where
// op(A) is m×k and op(B) is k×n. It runs on whatever blas32 implementation is
// in use: gonum's pure-Go one by default, OpenBLAS with the openblas build tag.
func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	blas32.Implementation().Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// parallelFor runs fn(i) for i in [0, n) on up to GOMAXPROCS goroutines and
// returns when all are done.
func parallelFor(n int, fn func(i int)) {
	parallelForWorker(n, func(_, i int) { fn(i) })
}

// workers is how many goroutines parallelFor uses for n items.
func workers(n int) int { return max(1, min(runtime.GOMAXPROCS(0), n)) }

// parallelForWorker is parallelFor that also passes the goroutine's index in
// [0, workers(n)), for per-goroutine scratch buffers.
func parallelForWorker(n int, fn func(worker, i int)) {
	w := workers(n)
	if w <= 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	for k := 0; k < w; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(k, i)
			}
		}(k)
	}
	wg.Wait()
}

// gemmParts is how many column (or row) blocks the dense layers' GEMMs are
// cut into, one goroutine each. It is fixed, not GOMAXPROCS, so the result
// does not depend on the thread count.
const gemmParts = 2

// splitCols runs fn(lo, hi) over gemmParts contiguous parts of [0, n) in
// parallel (parts may be empty when n < gemmParts).
func splitCols(n int, fn func(lo, hi int)) {
	parallelFor(gemmParts, func(i int) {
		if lo, hi := i*n/gemmParts, (i+1)*n/gemmParts; hi > lo {
			fn(lo, hi)
		}
	})
}

// scratch is working memory shared by the ops of one net: a conv layer needs
// its im2col columns and GEMM output only while it runs, and the ops of a net
// run one at a time (a Net is not safe for concurrent use), so one buffer
// serves every layer of every graph of the net.
type scratch struct{ buf []float32 }

// take returns parts×len(sizes) disjoint slices, slice [i·len(sizes)+j] of
// sizes[j] floats. It may reallocate, so call it before starting goroutines,
// and the slices are valid until the next take.
func (s *scratch) take(parts int, sizes ...int) [][]float32 {
	per := 0
	for _, n := range sizes {
		per += n
	}
	if need := parts * per; len(s.buf) < need {
		s.buf = make([]float32, need)
	}
	out := make([][]float32, 0, parts*len(sizes))
	off := 0
	for range parts {
		for _, n := range sizes {
			out = append(out, s.buf[off:off+n:off+n])
			off += n
		}
	}
	return out
}
