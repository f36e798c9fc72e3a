package paramserver

import (
	"context"
	"errors"
	"github.com/tailorml/tailor/internal/job"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/wire"
)

// speaks makes a client's calls carry protocol version v instead of its
// own: interceptors that run after the client's own, which put its version
// in the metadata, and replace it.
func speaks(v int) []grpc.DialOption {
	set := func(ctx context.Context) context.Context {
		md, _ := metadata.FromOutgoingContext(ctx)
		md = md.Copy()
		md.Set(wire.ProtocolHeader, strconv.Itoa(v))
		return metadata.NewOutgoingContext(ctx, md)
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(set(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(set(ctx), desc, cc, method, opts...)
		}),
	}
}

// A parameter server refuses a worker (a wire.Client) that speaks another
// wire protocol version, on every call — Init, Pull, Push, Idle — with an
// error that names both versions and the side to upgrade, and nothing it
// sent changes the server; a client of the same version, on the same
// servers, works.
func TestProtocolVersionRefused(t *testing.T) {
	c := startCluster(t, NewStaticMembers("w0", "w1"), testConfig(t, job.ModeAsync, 2, 0), testConfig(t, job.ModeAsync, 2, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	newer := wire.ProtocolVersion + 1
	other, err := wire.NewClient(wire.ClientConfig{RunID: testRun, WorkerID: "w1", Addrs: c.addrs, Spec: c.spec,
		ChunkBytes: wire.MinChunkBytes, DialOptions: speaks(newer)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	refused := func(what string, err error) {
		t.Helper()
		var pe *wire.ProtocolError
		if !errors.Is(err, wire.ErrProtocolVersion) || !errors.As(err, &pe) || status.Code(pe) != codes.FailedPrecondition {
			t.Fatalf("%s by a client of wire protocol %d: got %v, want a refusal (ErrProtocolVersion)", what, newer, err)
		}
		msg := pe.GRPCStatus().Message()
		want := "wire protocol " + strconv.Itoa(wire.ProtocolVersion) + " required, peer 127.0.0.1:"
		wantEnd := " speaks " + strconv.Itoa(newer) + ": upgrade tailor on this server (127.0.0.1:"
		if !strings.HasPrefix(msg, want) || !strings.Contains(msg, wantEnd) {
			t.Errorf("%s: refusal %q, want %q...%q...", what, msg, want, wantEnd)
		}
	}
	init := tensors(c.spec, 7)
	refused("Init", other.Init(ctx, init))
	for i := range c.servers {
		if st := c.status(t, i); st.Initialised {
			t.Fatalf("server %d initialised by a refused client", i)
		}
	}

	// this version's client initialises the servers; the other still
	// cannot pull, push or say it is idle
	good := c.client(t, "w0")
	if err := good.Init(ctx, init); err != nil {
		t.Fatalf("Init by a client of this version: %v", err)
	}
	before := []*wire.StatusReply{c.status(t, 0), c.status(t, 1)}
	into := zeros(c.spec)
	_, err = other.Pull(ctx, 0, into)
	refused("Pull", err)
	_, err = other.Push(ctx, 0, 0, grad(c.spec, 1, 0))
	refused("Push", err)
	refused("Idle", other.Idle(ctx, 1))

	v, err := good.Pull(ctx, 0, into)
	if err != nil || v != 0 {
		t.Fatalf("Pull by a client of this version = %d, %v", v, err)
	}
	sameBits(t, c.spec, into, init)
	for i := range c.servers {
		if st := c.status(t, i); st.Accepted != before[i].Accepted || st.Version != 0 || st.BytesIn != before[i].BytesIn {
			t.Errorf("server %d after refused pushes: %d accepted, version %d, %d bytes in; want %d, 0, %d as before them",
				i, st.Accepted, st.Version, st.BytesIn, before[i].Accepted, before[i].BytesIn)
		}
	}
	if v, err := good.Push(ctx, 0, v, grad(c.spec, 0, 0)); err != nil || v != 1 {
		t.Errorf("Push by a client of this version = %d, %v; want version 1", v, err)
	}

	// a client from before protocol versions sends none
	conn, err := grpc.NewClient(c.addrs[0], wire.DialOptionsVersion(nil, 0)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.Invoke(ctx, wire.MethodStatus, &wire.StatusRequest{RunID: testRun, WorkerID: "old"}, new(wire.StatusReply))
	if !errors.Is(err, wire.ErrProtocolVersion) || !strings.Contains(err.Error(), "peer speaks none (a tailor from before protocol versions): upgrade tailor on 127.0.0.1:") {
		t.Errorf("Status by a client of no version: %v", err)
	}
}
