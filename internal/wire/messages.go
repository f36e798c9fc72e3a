package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"google.golang.org/grpc/mem"
)

// Layout limits.
const (
	magic     = 0xA7
	prefixLen = 4 // magic, type, header length (u16 LE)

	// MaxHeaderBytes bounds a message's header (everything but a chunk's
	// payload).
	MaxHeaderBytes = 1<<16 - 1
	// MaxStringBytes bounds run ids, worker ids, modes and reasons.
	MaxStringBytes = 255
	// MaxChunkBytes bounds one chunk's payload.
	MaxChunkBytes = 16 << 20
	// DefaultChunkBytes is the payload size clients and servers send by
	// default: big enough that per-message costs vanish, small enough to
	// pipeline.
	DefaultChunkBytes = 1 << 20
	// MinChunkBytes is the smallest chunk a pull may ask for.
	MinChunkBytes = 4 << 10
	// MaxMessageBytes bounds any message: the gRPC receive limit.
	MaxMessageBytes = MaxChunkBytes + MaxHeaderBytes
	// maxReasons bounds StatusReply.Rejected.
	maxReasons = 64
)

// MsgType is a message's second byte.
type MsgType uint8

// Message types.
const (
	TypePushChunk     MsgType = 1
	TypePushReply     MsgType = 2
	TypePullRequest   MsgType = 3
	TypePullChunk     MsgType = 4
	TypeStatusRequest MsgType = 5
	TypeStatusReply   MsgType = 6
	TypeIdleRequest   MsgType = 9
	TypeCkptRequest   MsgType = 10
	TypeCkptReply     MsgType = 11
)

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

// PushReply answers Push and Init.
type PushReply struct {
	RunID    string
	WorkerID string
	Server   int
	Step     int64 // the pushed step
	Version  int64 // the server's version after handling the push
	Accepted bool
	Reason   string // a Reason constant when not accepted
}

// PullRequest asks a server for its weights once its version is at least
// MinVersion.
type PullRequest struct {
	RunID      string
	WorkerID   string
	Plan       uint64
	Server     int
	MinVersion int64
	ChunkBytes int    // wanted payload size; the server clamps it
	Flags      uint64 // FlagChecksum: checksum the chunks
}

// StatusRequest asks a server for its load and counters.
type StatusRequest struct {
	RunID    string
	WorkerID string // the asker, any name
}

// IdleRequest tells a server that a worker has no batch to work on for
// now (bounded staleness: an idle worker does not hold the others back).
// The worker's next push makes it active again. Servers of the other modes
// accept it and ignore it. The reply is a PushReply with Step echoed.
type IdleRequest struct {
	RunID    string
	WorkerID string
	Step     int64 // the worker's next step (its pushes so far)
}

// CheckpointOp says what a CheckpointRequest asks for.
type CheckpointOp uint8

// Checkpoint operations.
const (
	// CheckpointSave: snapshot the server's part at Version (-1: now) and
	// write it to Object in the run's checkpoint store.
	CheckpointSave CheckpointOp = 1
	// CheckpointRestore: read Object, check it against SHA256 and Bytes,
	// and replace the server's state with it.
	CheckpointRestore CheckpointOp = 2
)

// CheckpointRequest is the coordinator's order to save or restore a
// server's part of a checkpoint.
type CheckpointRequest struct {
	RunID    string
	WorkerID string // the asker
	Op       CheckpointOp
	Version  int64
	Object   string // object name in the run's checkpoint store
	SHA256   string // restore: hex digest the blob must have
	Bytes    int64  // restore: its size
}

// CheckpointReply says what the server saved or restored.
type CheckpointReply struct {
	RunID   string
	Server  int
	Version int64
	SHA256  string // hex
	Bytes   int64
}

// ReasonCount is one rejection counter.
type ReasonCount struct {
	Reason string
	Count  uint64
}

// StatusReply is a server's load and counters.
type StatusReply struct {
	RunID       string
	WorkerID    string // echoes the request
	Server      int
	Mode        string
	Initialised bool
	Version     int64 // updates applied (plus the initial version)
	Step        int64 // sync: the step being collected; async/SSP: the slowest active worker's step
	Members     int   // active workers
	Pending     int   // sync: gradients held for the current step; SSP: pushes held back
	BytesIn     uint64
	BytesOut    uint64
	Accepted    uint64
	Steps       uint64 // updates applied since start
	Missing     uint64 // sync: gradients a step went without (deadline, departure, quorum)
	Rejected    []ReasonCount
}

// ---- encoding helpers ----

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func appendVarint(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }
func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func beginHeader(t MsgType, capacity int) []byte {
	b := make([]byte, prefixLen, capacity)
	b[0], b[1] = magic, byte(t)
	return b
}

func finishHeader(b []byte) ([]byte, error) {
	if len(b) > MaxHeaderBytes {
		return nil, fmt.Errorf("wire: header of %d bytes exceeds %d", len(b), MaxHeaderBytes)
	}
	binary.LittleEndian.PutUint16(b[2:], uint16(len(b)))
	return b, nil
}

func checkStrings(ss ...string) error {
	for _, s := range ss {
		if len(s) > MaxStringBytes {
			return fmt.Errorf("wire: string of %d bytes exceeds %d", len(s), MaxStringBytes)
		}
	}
	return nil
}

// dec reads header fields; the first error sticks.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
}

func (d *dec) uvarint(what string, max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > max {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) int(what string, max int) int { return int(d.uvarint(what, uint64(max))) }

func (d *dec) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) fixed64(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *dec) fixed32(what string) uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) bool(what string) bool { return d.uvarint(what, 1) == 1 }

// str decodes a string into *dst, keeping the old string (no allocation)
// when the bytes are equal.
func (d *dec) str(what string, dst *string) {
	n := d.int(what, MaxStringBytes)
	if d.err != nil {
		return
	}
	if len(d.b) < n {
		d.fail(what)
		return
	}
	if b := d.b[:n]; string(b) != *dst {
		*dst = string(b)
	}
	d.b = d.b[n:]
}

// copyFrom copies data[off:off+len(dst)] into dst.
func copyFrom(data mem.BufferSlice, off int, dst []byte) {
	for _, buf := range data {
		if len(dst) == 0 {
			return
		}
		p := buf.ReadOnlyData()
		if off >= len(p) {
			off -= len(p)
			continue
		}
		n := copy(dst, p[off:])
		off = 0
		dst = dst[n:]
	}
}

// readHeader returns the header bytes (prefix included) of a message of the
// wanted type, in scratch if it fits; total is data.Len().
func readHeader(data mem.BufferSlice, total int, want MsgType, scratch []byte) ([]byte, error) {
	if total < prefixLen {
		return nil, fmt.Errorf("%w: %w: %d bytes", ErrCorrupt, ErrTruncated, total)
	}
	var pre [prefixLen]byte
	copyFrom(data, 0, pre[:])
	if pre[0] != magic {
		return nil, fmt.Errorf("%w: bad magic %#x", ErrCorrupt, pre[0])
	}
	if MsgType(pre[1]) != want {
		return nil, fmt.Errorf("%w: message type %d, want %d", ErrCorrupt, pre[1], want)
	}
	h := int(binary.LittleEndian.Uint16(pre[2:]))
	if h < prefixLen {
		return nil, fmt.Errorf("%w: header length %d", ErrCorrupt, h)
	}
	if h > total {
		return nil, fmt.Errorf("%w: %w: header of %d bytes in a message of %d", ErrCorrupt, ErrTruncated, h, total)
	}
	var hdr []byte
	if h <= cap(scratch) {
		hdr = scratch[:h]
	} else {
		hdr = make([]byte, h)
	}
	copyFrom(data, 0, hdr)
	return hdr, nil
}

// decodeSmall decodes a payload-free message: fields reads the header after
// the prefix. Bytes after the fields and inside the header are ignored (room
// for later fields); bytes after the header are an error.
func decodeSmall(data mem.BufferSlice, want MsgType, fields func(d *dec)) error {
	total := data.Len()
	var scratch [512]byte
	hdr, err := readHeader(data, total, want, scratch[:0])
	if err != nil {
		return err
	}
	if len(hdr) != total {
		return fmt.Errorf("%w: %d bytes after a payload-free message", ErrCorrupt, total-len(hdr))
	}
	d := dec{b: hdr[prefixLen:]}
	fields(&d)
	return d.err
}

func oneBuffer(b []byte) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(b)} }

// ---- Chunk ----

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

// ---- PushReply ----

func (r *PushReply) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID, r.Reason); err != nil {
		return nil, err
	}
	if r.Server < 0 {
		return nil, fmt.Errorf("wire: server %d", r.Server)
	}
	h := beginHeader(TypePushReply, 48+len(r.RunID)+len(r.WorkerID)+len(r.Reason))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendUvarint(h, uint64(r.Server))
	h = appendVarint(h, r.Step)
	h = appendVarint(h, r.Version)
	h = appendUvarint(h, b2u(r.Accepted))
	h = appendString(h, r.Reason)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *PushReply) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypePushReply, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Server = d.int("server", math.MaxInt32)
		r.Step = d.varint("step")
		r.Version = d.varint("version")
		r.Accepted = d.bool("accepted")
		d.str("reason", &r.Reason)
	})
}

// MarshalBinary encodes the reply.
func (r *PushReply) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a reply.
func (r *PushReply) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- PullRequest ----

func (r *PullRequest) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return nil, err
	}
	if r.Server < 0 || r.ChunkBytes < 0 {
		return nil, fmt.Errorf("wire: server %d, chunk bytes %d", r.Server, r.ChunkBytes)
	}
	h := beginHeader(TypePullRequest, 48+len(r.RunID)+len(r.WorkerID))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = binary.LittleEndian.AppendUint64(h, r.Plan)
	h = appendUvarint(h, uint64(r.Server))
	h = appendVarint(h, r.MinVersion)
	h = appendUvarint(h, uint64(r.ChunkBytes))
	h = appendUvarint(h, r.Flags)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *PullRequest) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypePullRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Plan = d.fixed64("plan")
		r.Server = d.int("server", math.MaxInt32)
		r.MinVersion = d.varint("min version")
		r.ChunkBytes = d.int("chunk bytes", math.MaxInt32)
		r.Flags = d.uvarint("flags", math.MaxUint64)
	})
}

// MarshalBinary encodes the request.
func (r *PullRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *PullRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- StatusRequest ----

func (r *StatusRequest) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return nil, err
	}
	h := beginHeader(TypeStatusRequest, 16+len(r.RunID)+len(r.WorkerID))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *StatusRequest) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeStatusRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
	})
}

// MarshalBinary encodes the request.
func (r *StatusRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *StatusRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- IdleRequest ----

func (r *IdleRequest) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID); err != nil {
		return nil, err
	}
	h := beginHeader(TypeIdleRequest, 24+len(r.RunID)+len(r.WorkerID))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendVarint(h, r.Step)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *IdleRequest) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeIdleRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Step = d.varint("step")
	})
}

// MarshalBinary encodes the request.
func (r *IdleRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *IdleRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- CheckpointRequest / CheckpointReply ----

func (r *CheckpointRequest) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID, r.Object, r.SHA256); err != nil {
		return nil, err
	}
	h := beginHeader(TypeCkptRequest, 48+len(r.RunID)+len(r.WorkerID)+len(r.Object)+len(r.SHA256))
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendUvarint(h, uint64(r.Op))
	h = appendVarint(h, r.Version)
	h = appendString(h, r.Object)
	h = appendString(h, r.SHA256)
	h = appendVarint(h, r.Bytes)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *CheckpointRequest) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeCkptRequest, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Op = CheckpointOp(d.uvarint("op", 255))
		r.Version = d.varint("version")
		d.str("object", &r.Object)
		d.str("sha256", &r.SHA256)
		r.Bytes = d.varint("bytes")
	})
}

// MarshalBinary encodes the request.
func (r *CheckpointRequest) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a request.
func (r *CheckpointRequest) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

func (r *CheckpointReply) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.SHA256); err != nil {
		return nil, err
	}
	if r.Server < 0 {
		return nil, fmt.Errorf("wire: server %d", r.Server)
	}
	h := beginHeader(TypeCkptReply, 40+len(r.RunID)+len(r.SHA256))
	h = appendString(h, r.RunID)
	h = appendUvarint(h, uint64(r.Server))
	h = appendVarint(h, r.Version)
	h = appendString(h, r.SHA256)
	h = appendVarint(h, r.Bytes)
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *CheckpointReply) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeCkptReply, func(d *dec) {
		d.str("run id", &r.RunID)
		r.Server = d.int("server", math.MaxInt32)
		r.Version = d.varint("version")
		d.str("sha256", &r.SHA256)
		r.Bytes = d.varint("bytes")
	})
}

// MarshalBinary encodes the reply.
func (r *CheckpointReply) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a reply.
func (r *CheckpointReply) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

// ---- StatusReply ----

func (r *StatusReply) marshal() (mem.BufferSlice, error) {
	if err := checkStrings(r.RunID, r.WorkerID, r.Mode); err != nil {
		return nil, err
	}
	if len(r.Rejected) > maxReasons {
		return nil, fmt.Errorf("wire: %d rejection counters exceed %d", len(r.Rejected), maxReasons)
	}
	if r.Server < 0 || r.Members < 0 || r.Pending < 0 {
		return nil, fmt.Errorf("wire: negative server, members or pending")
	}
	h := beginHeader(TypeStatusReply, 128+len(r.RunID)+len(r.WorkerID)+len(r.Rejected)*24)
	h = appendString(h, r.RunID)
	h = appendString(h, r.WorkerID)
	h = appendUvarint(h, uint64(r.Server))
	h = appendString(h, r.Mode)
	h = appendUvarint(h, b2u(r.Initialised))
	h = appendVarint(h, r.Version)
	h = appendVarint(h, r.Step)
	h = appendUvarint(h, uint64(r.Members))
	h = appendUvarint(h, uint64(r.Pending))
	h = appendUvarint(h, r.BytesIn)
	h = appendUvarint(h, r.BytesOut)
	h = appendUvarint(h, r.Accepted)
	h = appendUvarint(h, r.Steps)
	h = appendUvarint(h, r.Missing)
	h = appendUvarint(h, uint64(len(r.Rejected)))
	for _, rc := range r.Rejected {
		if err := checkStrings(rc.Reason); err != nil {
			return nil, err
		}
		h = appendString(h, rc.Reason)
		h = appendUvarint(h, rc.Count)
	}
	h, err := finishHeader(h)
	return oneBuffer(h), err
}

func (r *StatusReply) unmarshal(data mem.BufferSlice) error {
	return decodeSmall(data, TypeStatusReply, func(d *dec) {
		d.str("run id", &r.RunID)
		d.str("worker id", &r.WorkerID)
		r.Server = d.int("server", math.MaxInt32)
		d.str("mode", &r.Mode)
		r.Initialised = d.bool("initialised")
		r.Version = d.varint("version")
		r.Step = d.varint("step")
		r.Members = d.int("members", math.MaxInt32)
		r.Pending = d.int("pending", math.MaxInt32)
		r.BytesIn = d.uvarint("bytes in", math.MaxUint64)
		r.BytesOut = d.uvarint("bytes out", math.MaxUint64)
		r.Accepted = d.uvarint("accepted", math.MaxUint64)
		r.Steps = d.uvarint("steps", math.MaxUint64)
		r.Missing = d.uvarint("missing", math.MaxUint64)
		n := d.int("rejection count", maxReasons)
		r.Rejected = r.Rejected[:0]
		for i := 0; i < n && d.err == nil; i++ {
			var rc ReasonCount
			d.str("reason", &rc.Reason)
			rc.Count = d.uvarint("count", math.MaxUint64)
			r.Rejected = append(r.Rejected, rc)
		}
		if d.err != nil {
			r.Rejected = nil
		}
	})
}

// MarshalBinary encodes the reply.
func (r *StatusReply) MarshalBinary() ([]byte, error) { return materialize(r.marshal()) }

// UnmarshalBinary decodes a reply.
func (r *StatusReply) UnmarshalBinary(b []byte) error { return r.unmarshal(oneBuffer(b)) }

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func materialize(s mem.BufferSlice, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return s.Materialize(), nil
}
