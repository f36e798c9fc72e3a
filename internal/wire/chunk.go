package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"google.golang.org/grpc/mem"
)

// This file holds the Chunk, the message that carries floats both ways
// (pushed gradients, initial weights, pulled weights), and its encoding:
// the payload is checksummed and checked for NaN and Inf as it is copied.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FlagChecksum in Chunk.Flags says the header's CRC-32C covers the
// payload, and the receiver checks it. Without it the CRC is 0 and
// unchecked. Senders set it unless told not to: it catches what TCP's
// checksum misses, and costs little because nobody reads memory just to
// compute it — a pushing client checksums each piece of its tensors as it
// checks it for NaN and Inf, a receiver as it copies the piece out of
// gRPC's buffers, and a server as it copies a version's weights for pulls.
const FlagChecksum uint64 = 1

// Chunk carries a contiguous range of one part: a gradient (or, for State
// tensors, a value) pushed by a worker, initial weights sent by Init, or
// weights streamed back by Pull. Payload holds Len float32 values, little
// endian; the header holds its CRC-32C (see FlagChecksum).
type Chunk struct {
	Type     MsgType // TypePushChunk (Push, Init) or TypePullChunk (Pull)
	RunID    string
	WorkerID string
	Plan     uint64 // Plan.Fingerprint
	Flags    uint64 // FlagChecksum; other bits reserved (0)
	// Step is, in a push, the worker's step (sync: the step being collected;
	// async: the worker's own count of pushes); in a pull, equal to Version.
	Step int64
	// Version is, in a push, the weights version the gradient was computed
	// from; in a pull, the version of the weights sent.
	Version int64
	Server  int // server index in the plan
	Part    int // Part.ID in the plan
	Offset  int // floats, within the part
	// Encoding is how Payload holds the floats (pushes may compress
	// gradients: see Encoding); Scale is EncodingFloat16's exponent, and
	// Count the floats the chunk covers for every encoding but
	// EncodingFloat32 (0 otherwise: the payload's length says it).
	Encoding Encoding
	Scale    int
	Count    int
	Payload  []byte

	// Buf, if set, is sent instead of Payload and handed to gRPC, which
	// frees it once written (for zero-copy sends of reference-counted
	// memory). Marshal clears it.
	Buf mem.Buffer
	// CRC, when HasCRC is set, is the payload's CRC-32C, computed by the
	// sender beforehand (while the payload was in its cache): Marshal
	// sends it instead of computing it, and clears HasCRC. Unused without
	// FlagChecksum.
	CRC    uint32
	HasCRC bool
	// CheckFinite asks Unmarshal to check a float32 payload for NaN and
	// ±Inf as it copies it (while it is in cache); it sets NonFinite if it
	// finds one. Other encodings are not checked (NonFinite stays false):
	// check what they decode to.
	CheckFinite bool
	NonFinite   bool

	// Dst, if set, is called by Unmarshal once the header is decoded, with
	// the payload's length in bytes; it returns where the payload goes
	// (exactly n bytes) or an error, which Unmarshal returns. Without Dst the
	// payload goes to Payload's backing array if it is big enough.
	Dst func(c *Chunk, n int) ([]byte, error)
}

// Len is the number of floats the chunk covers (Decode writes them).
func (c *Chunk) Len() int {
	if c.Encoding == EncodingFloat32 {
		return len(c.Payload) / 4
	}
	return c.Count
}

func (c *Chunk) marshal() (mem.BufferSlice, error) {
	buf := c.Buf
	c.Buf = nil
	payload := c.Payload
	if buf != nil {
		payload = buf.ReadOnlyData()
	}
	fail := func(err error) (mem.BufferSlice, error) {
		c.HasCRC = false
		if buf != nil {
			buf.Free()
		}
		return nil, err
	}
	if c.Type != TypePushChunk && c.Type != TypePullChunk {
		return fail(fmt.Errorf("wire: chunk of message type %d", c.Type))
	}
	count := len(payload) / 4
	switch c.Encoding {
	case EncodingFloat32:
		if len(payload)%4 != 0 || len(payload) > MaxChunkBytes {
			return fail(fmt.Errorf("wire: chunk payload of %d bytes: want a multiple of 4, at most %d", len(payload), MaxChunkBytes))
		}
	case EncodingFloat16, EncodingTopK:
		count = c.Count
		pairs := len(payload) / topKBytes
		if count < 0 || count > MaxChunkBytes/4 || len(payload) != payloadBytes(c.Encoding, count, pairs) || pairs > count {
			return fail(fmt.Errorf("wire: %s chunk of %d floats with a payload of %d bytes", c.Encoding, count, len(payload)))
		}
		if c.Encoding == EncodingFloat16 && (c.Scale < -maxScale || c.Scale > maxScale) {
			return fail(fmt.Errorf("wire: binary16 scale %d: want [%d, %d]", c.Scale, -maxScale, maxScale))
		}
	default:
		return fail(fmt.Errorf("wire: chunk of encoding %d", c.Encoding))
	}
	if c.Server < 0 || c.Part < 0 || c.Offset < 0 {
		return fail(fmt.Errorf("wire: chunk server %d, part %d, offset %d: want ≥ 0", c.Server, c.Part, c.Offset))
	}
	if err := checkStrings(c.RunID, c.WorkerID); err != nil {
		return fail(err)
	}
	h := beginHeader(c.Type, 64+len(c.RunID)+len(c.WorkerID))
	h = appendString(h, c.RunID)
	h = appendString(h, c.WorkerID)
	h = binary.LittleEndian.AppendUint64(h, c.Plan)
	h = appendUvarint(h, c.Flags)
	h = appendVarint(h, c.Step)
	h = appendVarint(h, c.Version)
	h = appendUvarint(h, uint64(c.Server))
	h = appendUvarint(h, uint64(c.Part))
	h = appendUvarint(h, uint64(c.Offset))
	h = appendUvarint(h, uint64(count))
	var crc uint32
	switch {
	case c.Flags&FlagChecksum == 0:
	case c.HasCRC:
		crc = c.CRC
	default:
		crc = crc32.Checksum(payload, castagnoli)
	}
	c.HasCRC = false
	h = binary.LittleEndian.AppendUint32(h, crc)
	// Added fields: a float32 chunk has none (and so decodes as before).
	switch c.Encoding {
	case EncodingFloat16:
		h = appendUvarint(h, uint64(c.Encoding))
		h = appendVarint(h, int64(c.Scale))
	case EncodingTopK:
		h = appendUvarint(h, uint64(c.Encoding))
		h = appendUvarint(h, uint64(len(payload)/topKBytes))
	}
	h, err := finishHeader(h)
	if err != nil {
		return fail(err)
	}
	out := mem.BufferSlice{mem.SliceBuffer(h)}
	switch {
	case buf != nil:
		out = append(out, buf)
	case len(payload) > 0:
		out = append(out, mem.SliceBuffer(payload))
	}
	return out, nil
}

func (c *Chunk) unmarshal(data mem.BufferSlice) error {
	total := data.Len()
	var scratch [512]byte
	hdr, err := readHeaderEither(data, total, scratch[:0])
	if err != nil {
		return err
	}
	c.Type = MsgType(hdr[1])
	d := dec{b: hdr[prefixLen:]}
	d.str("run id", &c.RunID)
	d.str("worker id", &c.WorkerID)
	c.Plan = d.fixed64("plan")
	c.Flags = d.uvarint("flags", math.MaxUint64)
	c.Step = d.varint("step")
	c.Version = d.varint("version")
	c.Server = d.int("server", math.MaxInt32)
	c.Part = d.int("part", math.MaxInt32)
	c.Offset = d.int("offset", MaxTotalFloats)
	count := d.int("length", MaxChunkBytes/4)
	crc := d.fixed32("checksum")
	c.Encoding, c.Scale, c.Count, c.NonFinite = EncodingFloat32, 0, 0, false
	n := count * 4
	if len(d.b) > 0 {
		c.Encoding = Encoding(d.uvarint("encoding", uint64(maxEncoding)))
		switch c.Encoding {
		case EncodingFloat16:
			c.Scale = int(d.varint("binary16 scale"))
			if c.Scale < -maxScale || c.Scale > maxScale {
				d.fail("binary16 scale")
			}
			c.Count, n = count, payloadBytes(EncodingFloat16, count, 0)
		case EncodingTopK:
			pairs := d.int("top-k pairs", count)
			c.Count, n = count, payloadBytes(EncodingTopK, count, pairs)
		}
	}
	if d.err != nil {
		return d.err
	}
	if got := total - len(hdr); got != n {
		if got < n {
			return fmt.Errorf("%w: %w: payload of %d bytes, header says %d", ErrCorrupt, ErrTruncated, got, n)
		}
		return fmt.Errorf("%w: payload of %d bytes, header says %d", ErrCorrupt, got, n)
	}
	var dst []byte
	switch {
	case c.Dst != nil:
		if dst, err = c.Dst(c, n); err != nil {
			return err
		}
		if len(dst) != n {
			return fmt.Errorf("wire: chunk destination of %d bytes for a payload of %d", len(dst), n)
		}
	case cap(c.Payload) >= n:
		dst = c.Payload[:n]
	default:
		dst = make([]byte, n)
	}
	sum := c.Flags&FlagChecksum != 0
	fin := c.CheckFinite && c.Encoding == EncodingFloat32
	got, finite := copyChecked(data, len(hdr), dst, sum, fin)
	if sum && got != crc {
		return fmt.Errorf("%w: %w: part %d offset %d: crc %08x, header says %08x", ErrCorrupt, ErrChecksum, c.Part, c.Offset, got, crc)
	}
	c.NonFinite = fin && !finite
	c.Payload = dst
	return nil
}

// checkPiece is the most copyChecked copies before it checksums and checks
// what it copied, so that those passes read from L1 rather than memory.
const checkPiece = 16 << 10

// copyChecked is copyFrom that also returns, if sum, the CRC-32C of dst
// and, if fin, whether dst (float32s) is finite, each computed piece by
// piece right after the piece is copied.
func copyChecked(data mem.BufferSlice, off int, dst []byte, sum, fin bool) (crc uint32, finite bool) {
	if !sum && !fin {
		copyFrom(data, off, dst)
		return 0, true
	}
	finite = true
	w, checked := 0, 0 // bytes copied; bytes checked for finiteness (whole floats)
	for _, buf := range data {
		if w == len(dst) {
			break
		}
		p := buf.ReadOnlyData()
		if off >= len(p) {
			off -= len(p)
			continue
		}
		p = p[off:]
		off = 0
		for len(p) > 0 && w < len(dst) {
			n := copy(dst[w:min(len(dst), w+checkPiece)], p)
			if sum {
				crc = crc32.Update(crc, castagnoli, dst[w:w+n])
			}
			p, w = p[n:], w+n
			if fin {
				end := w &^ 3
				finite = finiteBytes(dst[checked:end]) && finite
				checked = end
			}
		}
	}
	return crc, finite
}

// readHeaderEither is readHeader for either chunk type.
func readHeaderEither(data mem.BufferSlice, total int, scratch []byte) ([]byte, error) {
	var t [2]byte
	copyFrom(data, 0, t[:])
	want := TypePushChunk
	if total >= 2 && MsgType(t[1]) == TypePullChunk {
		want = TypePullChunk
	}
	return readHeader(data, total, want, scratch)
}

// MarshalBinary encodes the chunk (copying the payload).
func (c *Chunk) MarshalBinary() ([]byte, error) {
	s, err := c.marshal()
	if err != nil {
		return nil, err
	}
	defer s.Free()
	return s.Materialize(), nil
}

// UnmarshalBinary decodes a chunk; see Dst for where the payload goes.
func (c *Chunk) UnmarshalBinary(b []byte) error { return c.unmarshal(oneBuffer(b)) }
