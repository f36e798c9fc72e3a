package wire

import (
	"context"
	"errors"
	"net"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

func sampleDecideMessages() []message {
	return []message{
		&DecideRequest{RunID: "run-1", Server: 1, Step: 41, Complete: []string{"w0", "w1", "w10", "w2"}},
		&DecideRequest{RunID: "r", Server: 0, Step: 0},
		&DecideReply{RunID: "run-1", Server: 1, Decision: Decision{Step: 41, Included: []string{"w2", "w0"}, Excluded: []string{"w1", "w9"}}},
		&DecideReply{RunID: "r", Server: 3, Decision: Decision{Step: 1 << 40, Included: []string{"worker-a"}}},
	}
}

func TestDecideRoundTrip(t *testing.T) {
	for _, m := range sampleDecideMessages() {
		b := encode(t, m)
		for _, piece := range []int{len(b) + 1, 1, 3, 7} {
			got := fresh(m)
			if err := got.unmarshal(split(b, piece)); err != nil {
				t.Fatalf("%T in pieces of %d: %v", m, piece, err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("%T in pieces of %d: got %+v, want %+v", m, piece, got, m)
			}
		}
	}
}

// Messages that break the rules are refused by the encoder, and the same
// bytes (built by hand) by the decoder.
func TestDecideInvalid(t *testing.T) {
	long := string(make([]byte, MaxStringBytes+1))
	for _, tc := range []struct {
		name string
		m    message
	}{
		{"unsorted complete", &DecideRequest{RunID: "r", Complete: []string{"w1", "w0"}}},
		{"repeated complete", &DecideRequest{RunID: "r", Complete: []string{"w0", "w0"}}},
		{"empty id", &DecideRequest{RunID: "r", Complete: []string{""}}},
		{"negative step", &DecideRequest{RunID: "r", Step: -1}},
		{"negative server", &DecideRequest{RunID: "r", Server: -1}},
		{"long run id", &DecideRequest{RunID: long}},
		{"too many", &DecideRequest{RunID: "r", Complete: make([]string, MaxDecideWorkers+1)}},
		{"names nobody", &DecideReply{RunID: "r", Decision: Decision{Step: 1}}},
		{"included twice", &DecideReply{RunID: "r", Decision: Decision{Included: []string{"a", "a"}}}},
		{"excluded unsorted", &DecideReply{RunID: "r", Decision: Decision{Included: []string{"a"}, Excluded: []string{"c", "b"}}}},
		{"both", &DecideReply{RunID: "r", Decision: Decision{Included: []string{"a", "b"}, Excluded: []string{"b"}}}},
		{"negative decided step", &DecideReply{RunID: "r", Decision: Decision{Step: -2, Included: []string{"a"}}}},
	} {
		if _, err := tc.m.marshal(); err == nil {
			t.Errorf("%s: marshalled", tc.name)
		}
		b := encodeUnchecked(tc.m)
		if b == nil {
			continue
		}
		if err := fresh(tc.m).unmarshal(oneBuffer(b)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: decoding got %v, want ErrCorrupt", tc.name, err)
		}
	}
	good := encode(t, sampleDecideMessages()[0])
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"truncated", good[:len(good)-1]},
		{"extra byte", append(append([]byte(nil), good...), 0)},
		{"other type", append([]byte{magic, byte(TypeDecideReply)}, good[2:]...)},
		{"huge count", hugeCount()},
	} {
		if err := new(DecideRequest).UnmarshalBinary(tc.b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", tc.name, err)
		}
	}
}

// encodeUnchecked encodes a decide message without validation, as a
// broken peer might; nil where the layout itself cannot hold it.
func encodeUnchecked(m message) []byte {
	var h []byte
	switch r := m.(type) {
	case *DecideRequest:
		if len(r.RunID) > MaxStringBytes || r.Server < 0 || len(r.Complete) > MaxDecideWorkers {
			return nil
		}
		h = beginHeader(TypeDecideRequest, 64)
		h = appendString(h, r.RunID)
		h = appendUvarint(h, uint64(r.Server))
		h = appendVarint(h, r.Step)
		h = appendIDs(h, r.Complete)
	case *DecideReply:
		h = beginHeader(TypeDecideReply, 64)
		h = appendString(h, r.RunID)
		h = appendUvarint(h, uint64(r.Server))
		h = appendVarint(h, r.Decision.Step)
		h = appendIDs(h, r.Decision.Included)
		h = appendIDs(h, r.Decision.Excluded)
	}
	h, err := finishHeader(h)
	if err != nil {
		return nil
	}
	return h
}

// hugeCount is a request whose id count exceeds what its header holds.
func hugeCount() []byte {
	h := beginHeader(TypeDecideRequest, 16)
	h = appendString(h, "r")
	h = appendUvarint(h, 0)
	h = appendVarint(h, 0)
	h = appendUvarint(h, 4000)
	h, _ = finishHeader(h)
	return h
}

func decideSeeds(want any) []message {
	var out []message
	for _, m := range sampleDecideMessages() {
		if reflect.TypeOf(m) == reflect.TypeOf(want) {
			out = append(out, m)
		}
	}
	return out
}

func FuzzDecideRequest(f *testing.F) {
	fuzzDecoder(f, func() message { return new(DecideRequest) }, decideSeeds(&DecideRequest{})...)
}

func FuzzDecideReply(f *testing.F) {
	fuzzDecoder(f, func() message { return new(DecideReply) }, decideSeeds(&DecideReply{})...)
}

// stepsFunc is a StepsHandler from a function.
type stepsFunc func(ctx context.Context, req *DecideRequest) (*DecideReply, error)

func (f stepsFunc) Decide(ctx context.Context, req *DecideRequest) (*DecideReply, error) {
	return f(ctx, req)
}

func serveStepsFunc(t *testing.T, f stepsFunc) *grpc.ClientConn {
	t.Helper()
	g := grpc.NewServer(ServerOptions(nil, "")...)
	RegisterSteps(g, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), DialOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rawCodec sends *[]byte as is, under the wire codec's name: garbage on
// the wire.
type rawCodec struct{}

func (rawCodec) Name() string { return CodecName }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func TestDecideOverGRPC(t *testing.T) {
	var calls atomic.Int32
	conn := serveStepsFunc(t, func(ctx context.Context, req *DecideRequest) (*DecideReply, error) {
		calls.Add(1)
		switch req.Step {
		case 1:
			return &DecideReply{RunID: req.RunID, Server: req.Server, Decision: Decision{Step: 1, Included: req.Complete}}, nil
		case 2: // answers another step
			return &DecideReply{RunID: req.RunID, Server: req.Server, Decision: Decision{Step: 3, Included: req.Complete}}, nil
		case 4: // answers another server
			return &DecideReply{RunID: req.RunID, Server: req.Server + 1, Decision: Decision{Step: 4, Included: req.Complete}}, nil
		}
		return nil, RejectStatus(ReasonRunID, "run \"x\"")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := NewDeciderClient(conn, "r", 1)
	d, err := c.Decide(ctx, 1, []string{"a", "b"})
	if err != nil || d.Step != 1 || !slices.Equal(d.Included, []string{"a", "b"}) {
		t.Errorf("decide: %+v, %v", d, err)
	}
	for _, step := range []int64{2, 4} {
		if _, err := c.Decide(ctx, step, []string{"a"}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("step %d: a reply to another question: got %v, want ErrCorrupt", step, err)
		}
	}
	_, err = c.Decide(ctx, 5, []string{"a"})
	if re := (*RejectedError)(nil); !errors.As(err, &re) || re.Reason != ReasonRunID || re.Server != -1 {
		t.Errorf("refusal: got %v, want a RejectedError for %s from server -1", err, ReasonRunID)
	}
	before := calls.Load()
	for _, b := range [][]byte{
		nil,
		{magic, byte(TypeDecideRequest), 4, 0},
		encodeUnchecked(&DecideRequest{RunID: "r", Complete: []string{"b", "a"}}),
		append(encode(t, sampleDecideMessages()[0]), 1),
	} {
		var out []byte
		err := conn.Invoke(ctx, MethodDecide, &b, &out, grpc.ForceCodecV2(rawCodec{}))
		if status.Code(err) != codes.Internal {
			t.Errorf("garbage %x: got %v, want code Internal", b, err)
		}
	}
	if n := calls.Load(); n != before {
		t.Errorf("garbage reached the handler %d times", n-before)
	}
}
