package wire

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/certs/certstest"
)

// countingWork is echoWork counting the requests that reached it.
type countingWork struct {
	echoWork
	calls atomic.Int32
}

func (w *countingWork) Next(ctx context.Context, req *WorkRequest) (*WorkReply, error) {
	w.calls.Add(1)
	return echoWork{}.Next(ctx, req)
}

// The coordinator's server (work requests from workers, step reports from
// parameter servers) with mutual TLS answers a client with a certificate
// of its CA and refuses every other client before a request reaches it.
func TestCoordinatorServicesMutualTLS(t *testing.T) {
	pki := certstest.New(t)
	work := new(countingWork)
	var decides atomic.Int32
	g := grpc.NewServer(ServerOptions(pki.TLS, "r")...)
	RegisterWork(g, work)
	RegisterSteps(g, stepsFunc(func(ctx context.Context, req *DecideRequest) (*DecideReply, error) {
		decides.Add(1)
		return &DecideReply{RunID: req.RunID, Server: req.Server, Decision: Decision{Step: req.Step, Included: req.Complete}}, nil
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	addr := lis.Addr().String()

	dial := func(t *testing.T, sec *tls.Config) *grpc.ClientConn {
		t.Helper()
		conn, err := grpc.NewClient(addr, DialOptions(sec)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("cluster certificate", func(t *testing.T) {
		conn := dial(t, pki.TLS)
		rep, err := NewWorkClient(conn).Next(ctx, &WorkRequest{RunID: "r", WorkerID: "w", Done: 4, Version: 9})
		if err != nil || rep.Step != 5 {
			t.Fatalf("Next = %+v, %v; want step 5", rep, err)
		}
		d, err := NewDeciderClient(conn, "r", 0).Decide(ctx, 3, []string{"w"})
		if err != nil || d.Step != 3 {
			t.Fatalf("Decide = %+v, %v; want step 3", d, err)
		}
	})
	work.calls.Store(0)
	decides.Store(0)
	for name, sec := range pki.Refused(t) {
		t.Run(name, func(t *testing.T) {
			conn := dial(t, sec)
			_, err := NewWorkClient(conn).Next(ctx, &WorkRequest{RunID: "r", WorkerID: "w", Done: 4})
			if status.Code(err) != codes.Unavailable {
				t.Errorf("Next (join) = %v, want Unavailable", err)
			}
			t.Logf("refused: %v", err)
			if _, err := NewDeciderClient(conn, "r", 0).Decide(ctx, 3, []string{"w"}); err == nil {
				t.Error("Decide succeeded")
			}
		})
	}
	if n, m := work.calls.Load(), decides.Load(); n != 0 || m != 0 {
		t.Errorf("refused clients reached the handlers: %d work requests, %d step reports", n, m)
	}
}
