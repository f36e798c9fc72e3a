package wire

import (
	"reflect"
	"testing"
)

// fuzzDecoder checks a decoder on arbitrary bytes: it must not panic, must
// agree with itself when the bytes arrive in pieces, and whatever it
// accepts must re-encode to something that decodes to the same message.
func fuzzDecoder(f *testing.F, zero func() message, seeds ...message) {
	for _, m := range seeds {
		b := encode(f, m)
		f.Add(b, uint8(0))
		f.Add(b, uint8(3))
		f.Add(b[:len(b)-1], uint8(0))
		f.Add(b[:len(b)/2], uint8(1))
		bad := append([]byte(nil), b...)
		bad[len(bad)/2] ^= 0x55
		f.Add(bad, uint8(2))
	}
	f.Add([]byte{}, uint8(0))
	f.Add([]byte{magic}, uint8(0))
	f.Add([]byte{magic, 1, 4, 0}, uint8(0))
	f.Add([]byte{magic, 1, 0xff, 0xff}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, piece uint8) {
		m := zero()
		err := m.unmarshal(oneBuffer(data))
		m2 := zero()
		err2 := m2.unmarshal(split(data, int(piece)+1))
		if (err == nil) != (err2 == nil) {
			t.Fatalf("whole: %v; in pieces of %d: %v", err, int(piece)+1, err2)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(normalise(m), normalise(m2)) {
			t.Fatalf("whole and in pieces decode differently: %+v vs %+v", m, m2)
		}
		again, err := m.marshal()
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", m, err)
		}
		m3 := zero()
		if err := m3.unmarshal(again); err != nil {
			t.Fatalf("decoding the re-encoding: %v", err)
		}
		if !reflect.DeepEqual(normalise(m), normalise(m3)) {
			t.Fatalf("round trip changed %+v into %+v", m, m3)
		}
	})
}

func seedsOf(want any) []message {
	var out []message
	for _, m := range sampleMessages() {
		if reflect.TypeOf(m) == reflect.TypeOf(want) {
			out = append(out, m)
		}
	}
	return out
}

func FuzzChunk(f *testing.F) {
	fuzzDecoder(f, func() message { return new(Chunk) }, seedsOf(&Chunk{})...)
}

// FuzzChunkDst decodes through a destination callback, as servers and
// clients do.
func FuzzChunkDst(f *testing.F) {
	fuzzDecoder(f, func() message {
		return &Chunk{Dst: func(c *Chunk, n int) ([]byte, error) {
			if n > 1<<16 {
				return nil, ErrShape
			}
			return Bytes(make([]float32, n/4)), nil
		}}
	}, seedsOf(&Chunk{})...)
}

func FuzzPushReply(f *testing.F) {
	fuzzDecoder(f, func() message { return new(PushReply) }, seedsOf(&PushReply{})...)
}

func FuzzPullRequest(f *testing.F) {
	fuzzDecoder(f, func() message { return new(PullRequest) }, seedsOf(&PullRequest{})...)
}

func FuzzStatusRequest(f *testing.F) {
	fuzzDecoder(f, func() message { return new(StatusRequest) }, seedsOf(&StatusRequest{})...)
}

func FuzzIdleRequest(f *testing.F) {
	fuzzDecoder(f, func() message { return new(IdleRequest) }, seedsOf(&IdleRequest{})...)
}

func FuzzCheckpointRequest(f *testing.F) {
	fuzzDecoder(f, func() message { return new(CheckpointRequest) }, seedsOf(&CheckpointRequest{})...)
}

func FuzzCheckpointReply(f *testing.F) {
	fuzzDecoder(f, func() message { return new(CheckpointReply) }, seedsOf(&CheckpointReply{})...)
}

func FuzzStatusReply(f *testing.F) {
	fuzzDecoder(f, func() message { return new(StatusReply) }, seedsOf(&StatusReply{})...)
}

func FuzzBNRequest(f *testing.F) {
	fuzzDecoder(f, func() message { return new(BNRequest) }, seedsOf(&BNRequest{})...)
}

func FuzzBNReply(f *testing.F) {
	fuzzDecoder(f, func() message { return new(BNReply) }, seedsOf(&BNReply{})...)
}

// FuzzChunkDecode decodes whatever chunk Unmarshal accepts into its floats:
// no panic, and an accepted top-k chunk's floats are zero but for its pairs.
func FuzzChunkDecode(f *testing.F) {
	for _, m := range seedsOf(&Chunk{}) {
		f.Add(encode(f, m))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Chunk
		if c.unmarshal(oneBuffer(data)) != nil || c.Len() > 1<<16 {
			return
		}
		dst := make([]float32, c.Len())
		for i := range dst {
			dst[i] = 1
		}
		if err := c.Decode(dst); err != nil {
			return
		}
		if c.Encoding == EncodingTopK {
			nonzero := 0
			for _, v := range dst {
				if v != 0 {
					nonzero++
				}
			}
			if nonzero > len(c.Payload)/topKBytes {
				t.Fatalf("%d nonzero floats from %d pairs", nonzero, len(c.Payload)/topKBytes)
			}
		}
	})
}
