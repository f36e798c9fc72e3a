package paramserver

import (
	"context"
	"encoding"
	"errors"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	"github.com/tailorml/tailor/internal/wire"
)

// Every kind of bad push is refused with its reason and counted, and the
// weights do not change.
func TestRejections(t *testing.T) {
	// w1 is a member that never pushes, so that w0's step stays open.
	members := NewStaticMembers("w0", "w1")
	cfgs := syncConfigs(t, 1, nil)
	c := startCluster(t, members, cfgs...)
	init := initCluster(t, c)
	plan := c.servers[0].Plan()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	good := func() []*wire.Chunk { return pushChunks(plan, 0, "w0", 0, grad(c.spec, 0, 0)) }
	edit := func(f func([]*wire.Chunk) []*wire.Chunk) func() []*wire.Chunk {
		return func() []*wire.Chunk { return f(good()) }
	}
	setFloat := func(cs []*wire.Chunk, part string, v float32) []*wire.Chunk {
		for _, ch := range cs {
			if plan.Parts[ch.Part].Name == part {
				wire.Floats(ch.Payload)[3] = v
				break
			}
		}
		return cs
	}
	for _, tc := range []struct {
		name   string
		reason string
		client func() error         // a push through a client, or
		chunks func() []*wire.Chunk // a raw push
	}{
		{name: "run id", reason: wire.ReasonRunID, client: func() error {
			_, err := c.clientOf(t, "other-run", "w0").Push(ctx, 0, 0, grad(c.spec, 0, 0))
			return err
		}},
		{name: "unknown worker", reason: wire.ReasonUnknownWorker, client: func() error {
			_, err := c.client(t, "intruder").Push(ctx, 0, 0, grad(c.spec, 0, 0))
			return err
		}},
		{name: "future step", reason: wire.ReasonFuture, client: func() error {
			_, err := c.client(t, "w0").Push(ctx, 3, 3, grad(c.spec, 0, 0))
			return err
		}},
		{name: "NaN in a param", reason: wire.ReasonNonFinite, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk {
			return setFloat(cs, "dense/w", float32(math.NaN()))
		})},
		{name: "Inf in a state", reason: wire.ReasonNonFinite, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk {
			return setFloat(cs, "bn/var", float32(math.Inf(-1)))
		})},
		{name: "incomplete", reason: wire.ReasonShape, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk { return cs[:len(cs)-1] })},
		{name: "nothing", reason: wire.ReasonShape, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk { return nil })},
		{name: "extra chunk", reason: wire.ReasonShape, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk { return append(cs, cs[0]) })},
		{name: "gap", reason: wire.ReasonShape, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk { return append(cs[:1], cs[2:]...) })},
		{name: "wrong part", reason: wire.ReasonShape, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk { cs[1].Part = 99; return cs })},
		{name: "wrong offset", reason: wire.ReasonShape, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk { cs[1].Offset++; return cs })},
		{name: "too long", reason: wire.ReasonShape, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk {
			last := cs[len(cs)-1]
			last.Payload = append(last.Payload, 0, 0, 0, 0)
			return cs
		})},
		{name: "header changes", reason: wire.ReasonShape, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk { cs[2].Step = 1; return cs })},
		{name: "plan", reason: wire.ReasonPlan, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk {
			for _, ch := range cs {
				ch.Plan++
			}
			return cs
		})},
		{name: "server index", reason: wire.ReasonPlan, chunks: edit(func(cs []*wire.Chunk) []*wire.Chunk {
			for _, ch := range cs {
				ch.Server = 1
			}
			return cs
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rejected(c.status(t, 0), tc.reason)
			var err error
			if tc.client != nil {
				err = tc.client()
			} else {
				var reply *wire.PushReply
				if reply, err = rawPush(t, c.addrs[0], tc.chunks()); err == nil && !reply.Accepted {
					err = &wire.RejectedError{Reason: reply.Reason}
				}
			}
			if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != tc.reason {
				t.Fatalf("got %v, want a rejection for %s", err, tc.reason)
			}
			st := c.status(t, 0)
			if n := rejected(st, tc.reason); n != before+1 {
				t.Errorf("%s counter went from %d to %d", tc.reason, before, n)
			}
			if st.Version != 0 || st.Pending != 0 || st.Accepted != 1 {
				t.Errorf("version %d, pending %d, accepted %d; want 0, 0, 1 (the init)", st.Version, st.Pending, st.Accepted)
			}
			into := zeros(c.spec)
			if _, err := c.client(t, "w1").Pull(ctx, 0, into); err != nil {
				t.Fatal(err)
			}
			sameBits(t, c.spec, into, init)
		})
	}

	// The client refuses NaN itself: nothing reaches a server.
	bad := grad(c.spec, 0, 0)
	bad[0][5] = float32(math.NaN())
	if _, err := c.client(t, "w0").Push(ctx, 0, 0, bad); !errors.Is(err, wire.ErrNonFinite) {
		t.Errorf("client push of NaN: got %v, want ErrNonFinite", err)
	}

	// A second push of the same step by the same worker.
	if _, err := c.client(t, "w0").Push(ctx, 0, 0, grad(c.spec, 0, 0)); err != nil {
		t.Fatal(err)
	}
	_, err := c.client(t, "w0").Push(ctx, 0, 0, grad(c.spec, 0, 1))
	if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != wire.ReasonDuplicate {
		t.Errorf("second push of a step: got %v, want %s", err, wire.ReasonDuplicate)
	}
	if v := c.servers[0].Version(); v != 0 {
		t.Errorf("version %d, want 0 (w1 has not pushed)", v)
	}

	// Init happens once.
	if err := c.client(t, "coordinator").Init(ctx, init); !errors.Is(err, wire.ErrRejected) {
		t.Errorf("second init: got %v, want a rejection", err)
	}
	// Pulls of another run are refused.
	if _, err := c.clientOf(t, "other-run", "w0").Pull(ctx, 0, zeros(c.spec)); !errors.Is(err, wire.ErrRejected) {
		t.Errorf("pull of another run: got %v, want a rejection", err)
	}
}

// Pushes before any weights are refused.
func TestPushBeforeInit(t *testing.T) {
	c := startCluster(t, NewStaticMembers("w0"), syncConfigs(t, 1, nil)...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.client(t, "w0").Push(ctx, 0, 0, grad(c.spec, 0, 0))
	if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != wire.ReasonUninitialised {
		t.Errorf("got %v, want %s", err, wire.ReasonUninitialised)
	}
}

// corruptCodec encodes like the wire codec, then flips a bit in the last
// byte: a chunk's payload, damaged on the way.
type corruptCodec struct{}

func (corruptCodec) Name() string { return wire.CodecName }

func (corruptCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := v.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	b[len(b)-1] ^= 0x08
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (corruptCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return v.(encoding.BinaryUnmarshaler).UnmarshalBinary(data.Materialize())
}

// A payload damaged on the wire fails its checksum: the push fails, is
// counted as corrupt, and the weights do not change.
func TestCorruptPayload(t *testing.T) {
	c := startCluster(t, NewStaticMembers("w0"), syncConfigs(t, 1, nil)...)
	init := initCluster(t, c)
	conn, err := grpc.NewClient(c.addrs[0], wire.DialOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, wire.MethodPush, grpc.ForceCodecV2(corruptCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range pushChunks(c.servers[0].Plan(), 0, "w0", 0, grad(c.spec, 0, 0)) {
		if err := st.SendMsg(ch); err != nil {
			break
		}
	}
	_ = st.CloseSend()
	if err := st.RecvMsg(new(wire.PushReply)); err == nil {
		t.Fatal("corrupt push answered without error")
	}
	eventually(t, 5*time.Second, "the corrupt counter", func() bool { return rejected(c.status(t, 0), wire.ReasonCorrupt) == 1 })
	into := zeros(c.spec)
	if v, err := c.client(t, "w0").Pull(ctx, 0, into); err != nil || v != 0 {
		t.Fatalf("pull: version %d, %v", v, err)
	}
	sameBits(t, c.spec, into, init)
}
