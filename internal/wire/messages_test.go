package wire

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"reflect"
	"testing"

	"google.golang.org/grpc/mem"
)

func sampleChunk() *Chunk {
	return &Chunk{
		Type: TypePushChunk, RunID: "run-1", WorkerID: "w3", Plan: 0x0123456789abcdef, Flags: FlagChecksum,
		Step: 41, Version: -1, Server: 2, Part: 17, Offset: 1 << 20,
		Payload: Bytes([]float32{1, -2.5, 3e-8, 0}),
	}
}

func sampleMessages() []message {
	pull := sampleChunk()
	pull.Type, pull.Step, pull.Version = TypePullChunk, 9, 9
	empty := sampleChunk()
	empty.Payload = nil
	unchecked := sampleChunk()
	unchecked.Flags = 0
	half := sampleChunk()
	half.Encoding, half.Scale, half.Count = EncodingFloat16, -3, 3
	half.Payload = []byte{0x00, 0x3c, 0x00, 0xc0, 0xff, 0x03} // 1, -2, the largest subnormal
	topk := sampleChunk()
	topk.Encoding, topk.Count = EncodingTopK, 100
	topk.Payload = []byte{2, 0, 0, 0, 0, 0, 0x80, 0x3f, 99, 0, 0, 0, 0, 0, 0x20, 0xc1} // [2]=1, [99]=-10
	topkNone := sampleChunk()
	topkNone.Encoding, topkNone.Count, topkNone.Payload = EncodingTopK, 7, nil
	return []message{
		sampleChunk(), pull, empty, unchecked, half, topk, topkNone,
		&PushReply{RunID: "run-1", WorkerID: "w3", Server: 2, Step: 41, Version: 42, Accepted: true},
		&PushReply{RunID: "run-1", WorkerID: "w3", Server: 0, Step: -3, Version: 7, Reason: ReasonNonFinite},
		&PullRequest{RunID: "r", WorkerID: "w", Plan: 1, Server: 5, MinVersion: 12345678901, ChunkBytes: 1 << 20, Flags: FlagChecksum},
		&StatusRequest{RunID: "r", WorkerID: "coordinator"},
		&IdleRequest{RunID: "r", WorkerID: "w2", Step: 77},
		&CheckpointRequest{RunID: "r", WorkerID: "coordinator", Op: CheckpointSave, Version: -1, Object: "checkpoints/r/j/000000000010-000001/ps-000.bin"},
		&CheckpointRequest{RunID: "r", Op: CheckpointRestore, Version: 10, Object: "x/ps-001.bin", SHA256: "ab12", Bytes: 1 << 35},
		&CheckpointReply{RunID: "r", Server: 1, Version: 10, SHA256: "ab12", Bytes: 12345},
		&BNRequest{RunID: "r", WorkerID: "w1", Gen: 1<<63 | 5, Step: 17, Slot: 3, Values: []float64{32, -1.5, 2.25e10, 0, 7}},
		&BNReply{RunID: "r", WorkerID: "w1", Step: 17, Slot: 3, Values: []float64{96, -4.5, 6.75e10, 1e-300, 21}, Workers: 3},
		&StatusReply{
			RunID: "r", WorkerID: "w", Server: 1, Mode: "sync", Initialised: true, Version: 10, Step: 10,
			Members: 3, Pending: 2, BytesIn: 1 << 40, BytesOut: 7, Accepted: 99, Steps: 10, Missing: 1,
			Rejected: []ReasonCount{{ReasonRunID, 1}, {ReasonNonFinite, 1 << 33}},
		},
		&StatusReply{RunID: "r", Mode: "async"},
	}
}

// fresh returns a zero message of m's type.
func fresh(m message) message {
	return reflect.New(reflect.TypeOf(m).Elem()).Interface().(message)
}

// split cuts b into a BufferSlice of pieces of at most n bytes.
func split(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > n {
		s = append(s, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return append(s, mem.SliceBuffer(b))
}

func encode(t testing.TB, m message) []byte {
	t.Helper()
	s, err := m.marshal()
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	return s.Materialize()
}

func normalise(m message) message {
	if c, ok := m.(*Chunk); ok {
		c.Dst, c.Buf = nil, nil
		if len(c.Payload) == 0 {
			c.Payload = nil
		}
	}
	if r, ok := m.(*StatusReply); ok && len(r.Rejected) == 0 {
		r.Rejected = nil
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b := encode(t, m)
		for _, piece := range []int{len(b) + 1, 1, 3, 7} {
			got := fresh(m)
			if err := got.unmarshal(split(b, piece)); err != nil {
				t.Fatalf("%T in pieces of %d: %v", m, piece, err)
			}
			if !reflect.DeepEqual(normalise(got), normalise(m)) {
				t.Errorf("%T in pieces of %d: got %+v, want %+v", m, piece, got, m)
			}
		}
	}
}

func TestChunkDst(t *testing.T) {
	b := encode(t, sampleChunk())
	dst := make([]float32, 6)
	c := &Chunk{Dst: func(h *Chunk, n int) ([]byte, error) {
		if h.Part != 17 || h.Offset != 1<<20 || n != 16 {
			t.Errorf("Dst got part %d offset %d n %d", h.Part, h.Offset, n)
		}
		return Bytes(dst[1:5]), nil
	}}
	if err := c.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if want := []float32{0, 1, -2.5, 3e-8, 0, 0}; !reflect.DeepEqual(dst, want) {
		t.Errorf("dst %v, want %v", dst, want)
	}
	refuse := errors.New("no")
	c.Dst = func(*Chunk, int) ([]byte, error) { return nil, refuse }
	if err := c.UnmarshalBinary(b); !errors.Is(err, refuse) {
		t.Errorf("Dst's error: got %v", err)
	}
	c.Dst = func(*Chunk, int) ([]byte, error) { return make([]byte, 3), nil }
	if err := c.UnmarshalBinary(b); err == nil {
		t.Error("short destination accepted")
	}
}

func TestChunkCorrupt(t *testing.T) {
	good := encode(t, sampleChunk())
	flip := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x10
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"prefix only", good[:4], ErrTruncated},
		{"truncated payload", good[:len(good)-1], ErrTruncated},
		{"extra byte", append(append([]byte(nil), good...), 0), ErrCorrupt},
		{"payload bit", flip(len(good) - 3), ErrChecksum},
		{"magic", flip(0), ErrCorrupt},
		{"type", append([]byte{magic, byte(TypePushReply)}, good[2:]...), ErrCorrupt},
	} {
		var c Chunk
		err := c.UnmarshalBinary(tc.b)
		if !errors.Is(err, tc.want) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// Without FlagChecksum a damaged payload goes through: that is the
	// price of turning it off.
	c := sampleChunk()
	c.Flags = 0
	b := encode(t, c)
	b[len(b)-3] ^= 0x10
	if err := new(Chunk).UnmarshalBinary(b); err != nil {
		t.Errorf("unchecked chunk: %v", err)
	}
}

func TestMarshalLimits(t *testing.T) {
	long := string(make([]byte, MaxStringBytes+1))
	for _, m := range []message{
		&Chunk{Type: TypePushChunk, RunID: long},
		&Chunk{Type: TypePushChunk, Payload: make([]byte, 5)},
		&Chunk{Type: 9},
		&PushReply{Reason: long},
		&StatusReply{Rejected: make([]ReasonCount, maxReasons+1)},
	} {
		if _, err := m.marshal(); err == nil {
			t.Errorf("%T %+v: marshalled", m, m)
		}
	}
}

// Finite's exponent test, at every alignment and length: the largest
// finite values, subnormals and -0 pass; every NaN pattern and ±Inf fail.
func TestFiniteBits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bits   uint32
		finite bool
	}{
		{"largest", 0x7f7fffff, true},
		{"-largest", 0xff7fffff, true},
		{"subnormal", 0x00000001, true},
		{"-0", 0x80000000, true},
		{"+inf", 0x7f800000, false},
		{"-inf", 0xff800000, false},
		{"quiet nan", 0x7fc00000, false},
		{"signalling nan", 0x7f800001, false},
		{"-nan all ones", 0xffffffff, false},
	} {
		for n := 1; n <= 19; n++ {
			for at := 0; at < n; at++ {
				for shift := 0; shift < 4; shift++ { // byte misalignment
					raw := make([]byte, shift+4*n)
					b := raw[shift:]
					for i := range n {
						binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(i)-7.25))
					}
					binary.LittleEndian.PutUint32(b[4*at:], tc.bits)
					if got := finiteBytes(b); got != tc.finite {
						t.Fatalf("%s at %d of %d, offset %d: finite %v, want %v", tc.name, at, n, shift, got, tc.finite)
					}
				}
			}
		}
	}
}

// Unmarshal's piecewise copy checks the CRC and, with CheckFinite, the
// values, whatever pieces the payload arrives in.
func TestChunkCheckedInPieces(t *testing.T) {
	nan := float32(math.NaN())
	for _, tc := range []struct {
		name      string
		values    []float32
		check     bool
		nonFinite bool
	}{
		{"finite", []float32{1, -2, 3, 4, 5}, true, false},
		{"nan last", []float32{1, -2, 3, 4, nan}, true, true},
		{"inf first", []float32{float32(math.Inf(-1)), 1, 2}, true, true},
		{"nan unchecked", []float32{1, nan}, false, false},
		{"long finite", make([]float32, 3*checkPiece/4+5), true, false},
	} {
		c := sampleChunk()
		c.Payload = Bytes(tc.values)
		b := encode(t, c)
		for _, piece := range []int{len(b), 1, 3, 7, 4096} {
			got := &Chunk{CheckFinite: tc.check}
			if err := got.unmarshal(split(b, piece)); err != nil {
				t.Fatalf("%s in pieces of %d: %v", tc.name, piece, err)
			}
			if got.NonFinite != tc.nonFinite {
				t.Errorf("%s in pieces of %d: NonFinite %v, want %v", tc.name, piece, got.NonFinite, tc.nonFinite)
			}
			bad := append([]byte(nil), b...)
			bad[len(bad)-1] ^= 1
			if err := got.unmarshal(split(bad, piece)); !errors.Is(err, ErrChecksum) {
				t.Errorf("%s in pieces of %d, payload damaged: got %v, want %v", tc.name, piece, err, ErrChecksum)
			}
		}
	}
}

// A precomputed CRC is sent as given (a wrong one is caught by the
// receiver) and used once.
func TestChunkPrecomputedCRC(t *testing.T) {
	c := sampleChunk()
	c.CRC, c.HasCRC = crc32.Checksum(c.Payload, castagnoli), true
	if err := new(Chunk).UnmarshalBinary(encode(t, c)); err != nil {
		t.Fatalf("right CRC: %v", err)
	}
	if c.HasCRC {
		t.Error("marshal left HasCRC set")
	}
	c.CRC, c.HasCRC = c.CRC^1, true
	if err := new(Chunk).UnmarshalBinary(encode(t, c)); !errors.Is(err, ErrChecksum) {
		t.Errorf("wrong CRC: got %v, want %v", err, ErrChecksum)
	}
	c.CRC = c.CRC ^ 1 ^ 0xdead // HasCRC is clear: computed again
	if err := new(Chunk).UnmarshalBinary(encode(t, c)); err != nil {
		t.Errorf("after use: %v", err)
	}
}

func TestFinite(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for n := 0; n < 20; n++ {
		f := make([]float32, n)
		for i := range f {
			f[i] = float32(i) - 3.5
		}
		if !Finite(f) {
			t.Fatalf("finite slice of %d reported non-finite", n)
		}
		for i := range f {
			for _, bad := range []float32{nan, inf, -inf} {
				g := append([]float32(nil), f...)
				g[i] = bad
				if Finite(g) {
					t.Fatalf("%v at %d of %d not caught", bad, i, n)
				}
			}
		}
	}
}
