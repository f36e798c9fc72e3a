package wire

import (
	"math/bits"
	"sync"
)

// bufferPool is gRPC's buffer pool for this protocol: size classes of
// powers of two from 4 KiB to 32 MiB, like gRPC's default, but without
// zeroing a buffer when it is reused. gRPC fills every byte of the buffers
// it takes (HTTP/2 frames read from the socket, write batches), and at the
// protocol's volumes the zeroing was a tenth of the CPU of a push or pull.
type bufferPool struct {
	classes [maxClass - minClass + 1]sync.Pool
}

const (
	minClass = 12 // 4 KiB
	maxClass = 25 // 32 MiB
)

var sharedPool = new(bufferPool)

func class(n int) int { return max(bits.Len(uint(n-1)), minClass) }

// Get implements mem.BufferPool.
func (p *bufferPool) Get(n int) *[]byte {
	c := class(n)
	if c > maxClass {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.classes[c-minClass].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// Put implements mem.BufferPool.
func (p *bufferPool) Put(b *[]byte) {
	n := cap(*b)
	c := class(n)
	if n != 1<<c || c > maxClass {
		return // not one of ours: let the GC have it
	}
	p.classes[c-minClass].Put(b)
}
