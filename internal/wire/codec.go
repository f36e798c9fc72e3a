package wire

import (
	"fmt"
	"unsafe"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// CodecName is the gRPC content-subtype of the codec
// ("application/grpc+tailorwire").
const CodecName = "tailorwire"

func init() {
	var x uint16 = 1
	if *(*byte)(unsafe.Pointer(&x)) != 1 {
		// Payloads are the in-memory bytes of []float32; supporting a
		// big-endian host would need a byte swap on both ends.
		panic("wire: big-endian hosts are not supported")
	}
	encoding.RegisterCodecV2(codec{})
}

// message is implemented by every wire message.
type message interface {
	marshal() (mem.BufferSlice, error)
	unmarshal(mem.BufferSlice) error
}

// codec encodes the wire messages; it never copies a chunk's payload on
// send, and copies it exactly once on receipt (into Chunk.Dst's slice).
type codec struct{}

func (codec) Name() string { return CodecName }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(message)
	if !ok {
		return nil, fmt.Errorf("wire: cannot marshal %T", v)
	}
	return m.marshal()
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(message)
	if !ok {
		return fmt.Errorf("wire: cannot unmarshal into %T", v)
	}
	return m.unmarshal(data)
}

// Bytes returns the memory of f as bytes (little endian on every host this
// package runs on). No copy: the result aliases f.
func Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), len(f)*4)
}

// Floats returns b as float32s, aliasing b. len(b) must be a multiple of 4
// and b 4-byte aligned (true of any slice of a []float32 or of a fresh
// []byte from make).
func Floats(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	if len(b)%4 != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
		panic("wire: Floats of a misaligned or odd-length byte slice")
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// Finite reports whether f holds neither NaN nor ±Inf.
func Finite(f []float32) bool {
	// x-x is 0 for finite x and NaN otherwise. Eight lanes, one branch.
	var acc [8]float32
	i := 0
	for ; i+8 <= len(f); i += 8 {
		g := f[i : i+8 : i+8]
		acc[0] += g[0] - g[0]
		acc[1] += g[1] - g[1]
		acc[2] += g[2] - g[2]
		acc[3] += g[3] - g[3]
		acc[4] += g[4] - g[4]
		acc[5] += g[5] - g[5]
		acc[6] += g[6] - g[6]
		acc[7] += g[7] - g[7]
	}
	for ; i < len(f); i++ {
		acc[0] += f[i] - f[i]
	}
	s := acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7]
	return s == 0
}
