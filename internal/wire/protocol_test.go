package wire

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// countingPS is a parameter server Handler that counts the calls that
// reach it and answers each with an empty success.
type countingPS struct{ calls atomic.Int32 }

func (h *countingPS) Push(st grpc.ServerStream) error {
	h.calls.Add(1)
	return st.SendMsg(&PushReply{RunID: "r", WorkerID: "w", Accepted: true})
}

func (h *countingPS) Init(st grpc.ServerStream) error { return h.Push(st) }

func (h *countingPS) Pull(req *PullRequest, st grpc.ServerStream) error {
	h.calls.Add(1)
	return nil
}

func (h *countingPS) Status(ctx context.Context, req *StatusRequest) (*StatusReply, error) {
	h.calls.Add(1)
	return &StatusReply{RunID: req.RunID, WorkerID: req.WorkerID, Mode: "sync"}, nil
}

func (h *countingPS) Idle(ctx context.Context, req *IdleRequest) (*PushReply, error) {
	h.calls.Add(1)
	return &PushReply{RunID: req.RunID, WorkerID: req.WorkerID, Accepted: true}, nil
}

func (h *countingPS) Checkpoint(ctx context.Context, req *CheckpointRequest) (*CheckpointReply, error) {
	h.calls.Add(1)
	return &CheckpointReply{}, nil
}

// TestProtocolVersionCheck serves a parameter server and the coordinator's
// Work service on one real gRPC server and calls them as clients of this
// protocol version, of a newer and an older one, and of none (a tailor from
// before versions): only the first reaches a handler; the others get
// FailedPrecondition, errors.Is ErrProtocolVersion, and a message that
// names both versions and the side to upgrade, on unary calls and on
// streams alike.
func TestProtocolVersionCheck(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvAddr := lis.Addr().String()
	g := grpc.NewServer(ServerOptions(nil, "")...)
	ps := &countingPS{}
	Register(g, ps)
	RegisterWork(g, echoWork{})
	go g.Serve(lis)
	t.Cleanup(g.Stop)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v := ProtocolVersion
	older := v - 1 // while v is 1: -1, since 0 sends no version
	if older == 0 {
		older = -1
	}
	req := "wire protocol " + strconv.Itoa(v) + " required, peer "
	tests := []struct {
		name    string
		version int
		// want is the refusal's message, CLIENT standing for the client's
		// address as the server sees it; empty: accepted
		want string
	}{
		{"same version", v, ""},
		{"newer client", v + 1, req + "CLIENT speaks " + strconv.Itoa(v+1) + ": upgrade tailor on this server (" + srvAddr + ")"},
		{"older client", older, req + "speaks " + strconv.Itoa(older) + ": upgrade tailor on CLIENT"},
		{"no version", 0, req + "speaks none (a tailor from before protocol versions): upgrade tailor on CLIENT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := grpc.NewClient(srvAddr, DialOptionsVersion(nil, tt.version)...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			before := ps.calls.Load()
			check := func(what string, err error) {
				t.Helper()
				if tt.want == "" {
					if err != nil {
						t.Errorf("%s: %v", what, err)
					}
					return
				}
				var pe *ProtocolError
				if !errors.Is(err, ErrProtocolVersion) || !errors.As(err, &pe) {
					t.Fatalf("%s: got %v, want a *ProtocolError", what, err)
				}
				if c := status.Code(err); c != codes.FailedPrecondition {
					t.Errorf("%s: code %v, want FailedPrecondition", what, c)
				}
				msg := pe.GRPCStatus().Message()
				t.Logf("%s: %v", what, err)
				pre, post, _ := strings.Cut(tt.want, "CLIENT")
				client := strings.TrimSuffix(strings.TrimPrefix(msg, pre), post)
				if !strings.HasPrefix(msg, pre) || !strings.HasSuffix(msg, post) || !strings.HasPrefix(client, "127.0.0.1:") {
					t.Errorf("%s: message\n%q\nwant\n%q (CLIENT: the client's address)", what, msg, tt.want)
				}
				if !strings.HasPrefix(err.Error(), "wire: refused by the server: wire protocol ") {
					t.Errorf("%s: error %q", what, err)
				}
			}

			// unary: a parameter server's Status, the coordinator's Next
			r := new(StatusReply)
			check("Status", conn.Invoke(ctx, MethodStatus, &StatusRequest{RunID: "r", WorkerID: "w"}, r))
			_, err = NewWorkClient(conn).Next(ctx, &WorkRequest{RunID: "r", WorkerID: "w", Done: 1})
			check("Next", err)

			// streams: a push (the refusal arrives as the stream's status)
			// and a pull
			st, err := NewStream(ctx, conn, MethodPush)
			if err == nil {
				_ = st.CloseSend()
				err = st.RecvMsg(new(PushReply))
			}
			check("Push", err)
			st, err = NewStream(ctx, conn, MethodPull)
			if err == nil {
				if err = st.SendMsg(&PullRequest{RunID: "r", WorkerID: "w", Server: 0}); err == nil {
					_ = st.CloseSend()
					if err = st.RecvMsg(new(Chunk)); err != nil && err.Error() == "EOF" {
						err = nil // accepted, and the fake server sends nothing
					}
				}
			}
			check("Pull", err)

			got := ps.calls.Load() - before
			if tt.want == "" && got != 3 {
				t.Errorf("%d calls reached the parameter server, want 3", got)
			}
			if tt.want != "" && got != 0 {
				t.Errorf("%d refused calls reached the parameter server", got)
			}
		})
	}
}

// TestProtocolCheckedBeforeDecoding: a request of another version is
// refused for its version, not misread: bytes this version cannot decode
// get the protocol error, never a decoding one.
func TestProtocolCheckedBeforeDecoding(t *testing.T) {
	conn := serveStepsFunc(t, func(ctx context.Context, req *DecideRequest) (*DecideReply, error) {
		t.Error("the handler ran")
		return nil, errors.New("unreachable")
	})
	other, err := grpc.NewClient(conn.Target(), DialOptionsVersion(nil, ProtocolVersion+1)...)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := []byte{0xA7, 0xff, 0, 1, 2, 3}
	var out []byte
	err = other.Invoke(ctx, MethodDecide, &b, &out, grpc.ForceCodecV2(rawCodec{}))
	if !errors.Is(err, ErrProtocolVersion) {
		t.Errorf("garbage of another version: got %v, want ErrProtocolVersion", err)
	}
	// the same garbage from this version is a decoding error
	err = conn.Invoke(ctx, MethodDecide, &b, &out, grpc.ForceCodecV2(rawCodec{}))
	if status.Code(err) != codes.Internal || errors.Is(err, ErrProtocolVersion) {
		t.Errorf("garbage of this version: got %v, want code Internal", err)
	}
}
