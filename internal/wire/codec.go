package wire

import (
	"encoding/binary"
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
func Finite(f []float32) bool { return finiteBytes(Bytes(f)) }

// Exponent bits of two float32s in a little-endian uint64, and the lowest
// exponent bit of each: adding it to a lane's exponent bits sets the
// lane's top bit exactly when they are all ones (NaN or ±Inf), and never
// carries into the other lane.
const (
	expBits2  = 0x7f800000_7f800000
	expLow2   = 0x00800000_00800000
	signBits2 = 0x80000000_80000000
)

// finiteBytes is Finite of b, the bytes of float32s (len(b) a multiple of
// 4; b need not be aligned): eight bytes at a time, one branch at the end.
func finiteBytes(b []byte) bool {
	var acc uint64
	for len(b) >= 32 {
		x0 := binary.LittleEndian.Uint64(b[0:8])
		x1 := binary.LittleEndian.Uint64(b[8:16])
		x2 := binary.LittleEndian.Uint64(b[16:24])
		x3 := binary.LittleEndian.Uint64(b[24:32])
		acc |= (x0&expBits2 + expLow2) | (x1&expBits2 + expLow2) | (x2&expBits2 + expLow2) | (x3&expBits2 + expLow2)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc |= binary.LittleEndian.Uint64(b[0:8])&expBits2 + expLow2
		b = b[8:]
	}
	if len(b) >= 4 {
		acc |= uint64(binary.LittleEndian.Uint32(b[0:4]))&expBits2 + expLow2
	}
	return acc&signBits2 == 0
}
