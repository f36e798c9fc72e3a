package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Encoding is how a chunk's payload holds its floats. Pulls and Init are
// always EncodingFloat32; a push's Param chunks use the run's encoding
// (Compression), its State chunks (values, not gradients) EncodingFloat32.
type Encoding uint8

// Encodings.
const (
	// EncodingFloat32: Count float32, little endian.
	EncodingFloat32 Encoding = 0
	// EncodingFloat16: Count IEEE binary16, little endian, each the value
	// times 2^Scale (a per-chunk power of two that puts the largest
	// magnitude in [2^14, 2^15), so that small gradients keep their
	// precision instead of going subnormal).
	EncodingFloat16 Encoding = 1
	// EncodingTopK: K (index uint32, value float32) pairs, little endian,
	// indexes within the chunk strictly increasing and below Count; every
	// float not listed is 0.
	EncodingTopK Encoding = 2

	maxEncoding = EncodingTopK
)

// Names of the encodings, as a job spec spells them.
const (
	CompressionNone = "none"
	CompressionFP16 = "fp16"
	CompressionTopK = "topk"
)

func (e Encoding) String() string {
	switch e {
	case EncodingFloat32:
		return CompressionNone
	case EncodingFloat16:
		return CompressionFP16
	case EncodingTopK:
		return CompressionTopK
	}
	return fmt.Sprintf("encoding(%d)", uint8(e))
}

// ParseEncoding reads a compression name: "none" or "" (float32), "fp16"
// or "topk".
func ParseEncoding(s string) (Encoding, error) {
	switch s {
	case "", CompressionNone:
		return EncodingFloat32, nil
	case CompressionFP16:
		return EncodingFloat16, nil
	case CompressionTopK:
		return EncodingTopK, nil
	}
	return 0, fmt.Errorf("wire: compression %q: want none, fp16 or topk", s)
}

// Compression is how a worker encodes its pushed gradients.
type Compression struct {
	Encoding Encoding
	// TopK is, for EncodingTopK, the fraction of each chunk's floats sent
	// (at least one per chunk), in (0, 1]; what is not sent is kept as the
	// worker's residual and added to the next step's gradient (error
	// feedback). Ignored by the other encodings.
	TopK float64
}

// DefaultTopK is the fraction of a gradient's floats a top-k push sends
// when none is given: 8 bytes a pair, so 0.4 of the float32 bytes (2.5x
// fewer). Measured (BENCHMARKS.md, "Gradient compression"): 0.2 trains
// within 0.1 pt of test mAP of uncompressed runs over three seeds, 0.1 about
// 1 pt below.
const DefaultTopK = 0.2

// Validate checks c.
func (c Compression) Validate() error {
	switch {
	case c.Encoding > maxEncoding:
		return fmt.Errorf("wire: unknown encoding %d", c.Encoding)
	case c.Encoding == EncodingTopK && !(c.TopK > 0 && c.TopK <= 1):
		return fmt.Errorf("wire: top-k fraction %v: want (0, 1]", c.TopK)
	}
	return nil
}

// ---- binary16 ----

// F16 rounds f to the nearest IEEE binary16 (ties to even): overflow gives
// ±Inf, values below half the smallest subnormal ±0, NaN a quiet NaN with
// f's sign and top payload bits.
func F16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7e00 | uint16(man>>13)
	}
	e := exp - 127 + 15
	switch {
	case e >= 31:
		return sign | 0x7c00
	case e <= 0:
		if e < -10 {
			return sign
		}
		man |= 0x800000
		shift := uint(14 - e)
		h := man >> shift
		rem, halfway := man&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > halfway || rem == halfway && h&1 == 1 {
			h++ // may become the smallest normal: still right
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | man>>13
	if rem := man & 0x1fff; rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++ // a carry into the exponent is right, up to Inf
	}
	return sign | uint16(h)
}

// F32 is the float32 of the binary16 h (exact).
func F32(h uint16) float32 { return f16table[h] }

var f16table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = f16to32(uint16(i))
	}
	return &t
}()

func f16to32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		e := uint32(127 - 15 + 1)
		for man&0x400 == 0 {
			man <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// maxScale bounds EncodingFloat16's exponent: 2^±maxScale is a normal
// float32.
const maxScale = 100

// pow2 is 2^e as a float32, for |e| ≤ maxScale.
func pow2(e int) float32 { return math.Float32frombits(uint32(127+e) << 23) }

// f16Scale is the exponent that puts the largest magnitude of x (finite)
// in [2^14, 2^15): 0 for an all-zero x.
func f16Scale(x []float32) int {
	var top uint32
	for _, v := range x {
		top = max(top, math.Float32bits(v)&0x7fffffff)
	}
	if top == 0 {
		return 0
	}
	exp := int(top>>23) - 127 // subnormals: -127, clamped below
	return min(max(14-exp, -maxScale), maxScale)
}

// EncodeF16 writes x as binary16 scaled by 2^scale into dst (2·len(x)
// bytes) and returns scale. Finite values beyond the binary16 range after
// scaling (only possible for magnitudes above 2^114) saturate at ±65504,
// so a finite gradient never arrives as Inf.
func EncodeF16(dst []byte, x []float32) (scale int) {
	scale = f16Scale(x)
	encodeF16With(dst, x, pow2(scale))
	return scale
}

// encodeF16With writes F16(x[i]·m) into dst, saturating finite values.
func encodeF16With(dst []byte, x []float32, m float32) {
	dst = dst[:2*len(x)]
	for i, v := range x {
		b := math.Float32bits(v * m)
		var h uint16
		if e := b >> 23 & 0xff; e-113 < 30 {
			// a binary16 normal: F16's last case, inlined
			man := b & 0x7fffff
			u := (e-112)<<10 | man>>13
			if rem := man & 0x1fff; rem > 0x1000 || rem == 0x1000 && u&1 == 1 {
				u++
			}
			h = uint16(b>>16)&0x8000 | uint16(min(u, 0x7bff))
		} else {
			h = F16(math.Float32frombits(b))
			if h&0x7fff == 0x7c00 && b&0x7fffffff != 0x7f800000 {
				h = h&0x8000 | 0x7bff // a finite value saturates
			}
		}
		binary.LittleEndian.PutUint16(dst[2*i:], h)
	}
}

// DecodeF16 is EncodeF16's inverse: dst[i] = F32(src[i]) · 2^-scale.
func DecodeF16(dst []float32, src []byte, scale int) error {
	if len(src) != 2*len(dst) {
		return fmt.Errorf("%w: %d bytes of binary16 for %d floats", ErrCorrupt, len(src), len(dst))
	}
	if scale < -maxScale || scale > maxScale {
		return fmt.Errorf("%w: binary16 scale %d", ErrCorrupt, scale)
	}
	m := pow2(-scale)
	for i := range dst {
		dst[i] = f16table[binary.LittleEndian.Uint16(src[2*i:])] * m
	}
	return nil
}

// ---- top-k ----

// topKBytes is the size of one (index, value) pair.
const topKBytes = 8

// TopKCount is how many floats a top-k chunk of n floats sends (at most).
func TopKCount(n int, frac float64) int {
	return min(n, max(1, int(math.Ceil(frac*float64(n)))))
}

// topKSelector keeps the histogram of a radix selection.
type topKSelector struct {
	hist [1 << 11]int32
	keys []uint32
}

// threshold returns the k-th largest of keys (1 ≤ k ≤ len(keys)) and how
// many keys equal to it are among the k largest, by a three-pass radix
// selection over the bits of the keys (11, 10 and 10 bits). Deterministic
// and linear.
func (s *topKSelector) threshold(keys []uint32, k int) (thr uint32, ties int) {
	var prefix, mask uint32
	for _, d := range [...]struct{ shift, width uint }{{20, 11}, {10, 10}, {0, 10}} {
		bins := 1 << d.width
		h := s.hist[:bins]
		clear(h)
		m := uint32(bins - 1)
		for _, key := range keys {
			if key&mask == prefix {
				h[key>>d.shift&m]++
			}
		}
		b := bins - 1
		for ; b > 0 && int(h[b]) < k; b-- {
			k -= int(h[b])
		}
		prefix |= uint32(b) << d.shift
		mask |= m << d.shift
	}
	return prefix, k
}

// encode writes the k largest magnitudes of x (k = TopKCount; zeros
// are never sent, so fewer when x has fewer nonzeros) as (index, value)
// pairs into dst (at least topKBytes·k bytes), in index order; among equal
// magnitudes the lower indexes go first. It returns the bytes written.
// x's entries that were sent are set to 0: what remains in x is the
// residual. Every value is sent exactly, as float32.
func (s *topKSelector) encode(dst []byte, x []float32, k int) int {
	if len(x) == 0 || k <= 0 {
		return 0
	}
	if cap(s.keys) < len(x) {
		s.keys = make([]uint32, len(x))
	}
	keys := s.keys[:len(x)]
	for i, v := range x {
		keys[i] = math.Float32bits(v) & 0x7fffffff
	}
	thr, ties := s.threshold(keys, min(k, len(x)))
	if thr == 0 {
		ties = 0 // zeros are not worth sending
	}
	n := 0
	for i, key := range keys {
		if key < thr || key == 0 {
			continue
		}
		if key == thr {
			if ties == 0 {
				continue
			}
			ties--
		}
		binary.LittleEndian.PutUint32(dst[n:], uint32(i))
		binary.LittleEndian.PutUint32(dst[n+4:], math.Float32bits(x[i]))
		x[i] = 0
		n += topKBytes
	}
	return n
}

// DecodeTopK writes the pairs of src into dst, which it zeroes first.
// Indexes must be strictly increasing and below len(dst).
func DecodeTopK(dst []float32, src []byte) error {
	if len(src)%topKBytes != 0 || len(src)/topKBytes > len(dst) {
		return fmt.Errorf("%w: %d bytes of top-k pairs for %d floats", ErrCorrupt, len(src), len(dst))
	}
	clear(dst)
	next := 0
	for o := 0; o < len(src); o += topKBytes {
		i := binary.LittleEndian.Uint32(src[o:])
		if uint64(i) < uint64(next) || uint64(i) >= uint64(len(dst)) {
			return fmt.Errorf("%w: top-k index %d after %d, in %d floats", ErrCorrupt, i, next-1, len(dst))
		}
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[o+4:]))
		next = int(i) + 1
	}
	return nil
}

// Decode writes the floats of a chunk's payload (decoded by Unmarshal)
// into dst, which must hold exactly Len floats. It checks what Unmarshal
// cannot: top-k indexes and the binary16 scale.
func (c *Chunk) Decode(dst []float32) error {
	if len(dst) != c.Len() {
		return fmt.Errorf("wire: decoding a chunk of %d floats into %d", c.Len(), len(dst))
	}
	switch c.Encoding {
	case EncodingFloat32:
		copy(Bytes(dst), c.Payload)
		return nil
	case EncodingFloat16:
		return DecodeF16(dst, c.Payload, c.Scale)
	case EncodingTopK:
		return DecodeTopK(dst, c.Payload)
	}
	return fmt.Errorf("%w: encoding %d", ErrCorrupt, c.Encoding)
}

// payloadBytes is the payload size of a chunk of count floats with the
// given encoding and top-k pairs.
func payloadBytes(e Encoding, count, pairs int) int {
	switch e {
	case EncodingFloat16:
		return 2 * count
	case EncodingTopK:
		return topKBytes * pairs
	}
	return 4 * count
}
