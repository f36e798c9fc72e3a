package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/certs/certstest"
	"github.com/tailorml/tailor/internal/identity"
)

// countingBN is countingWork that also counts BatchNorm reductions.
type countingBN struct {
	countingWork
}

func (w *countingBN) ReduceBN(ctx context.Context, req *BNRequest) (*BNReply, error) {
	w.calls.Add(1)
	return echoWork{}.ReduceBN(ctx, req)
}

// serveTLS serves h's services with sec for run on a loopback port and
// returns its address.
func serveTLS(t *testing.T, sec *tls.Config, run string, register func(*grpc.Server)) string {
	t.Helper()
	g := grpc.NewServer(ServerOptions(sec, run)...)
	register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func dialTLS(t *testing.T, addr string, sec *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, DialOptions(sec)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// callMethod makes one call of method on conn, as the roles' clients do,
// and returns its error (nil: the handler answered).
func callMethod(ctx context.Context, conn *grpc.ClientConn, method string) error {
	switch method {
	case MethodPush, MethodInit:
		st, err := NewStream(ctx, conn, method)
		if err != nil {
			return err
		}
		_ = st.CloseSend()
		return st.RecvMsg(new(PushReply))
	case MethodPull:
		st, err := NewStream(ctx, conn, method)
		if err != nil {
			return err
		}
		if err := st.SendMsg(&PullRequest{RunID: "r", WorkerID: "w"}); err != nil {
			return err
		}
		_ = st.CloseSend()
		if err := st.RecvMsg(new(Chunk)); err != io.EOF {
			return err
		}
		return nil // accepted: the fake server sends no chunk
	case MethodStatus:
		return conn.Invoke(ctx, method, &StatusRequest{RunID: "r", WorkerID: "w"}, new(StatusReply))
	case MethodIdle:
		return conn.Invoke(ctx, method, &IdleRequest{RunID: "r", WorkerID: "w", Step: 1}, new(PushReply))
	case MethodCheckpoint:
		return conn.Invoke(ctx, method, &CheckpointRequest{RunID: "r", WorkerID: "coordinator", Version: 1}, new(CheckpointReply))
	case MethodWorkNext:
		_, err := NewWorkClient(conn).Next(ctx, &WorkRequest{RunID: "r", WorkerID: "w", Done: 1})
		return err
	case MethodReduceBN:
		_, err := NewWorkClient(conn).ReduceBN(ctx, &BNRequest{RunID: "r", WorkerID: "w", Step: 1, Values: []float64{1}})
		return err
	case MethodDecide:
		_, err := NewDeciderClient(conn, "r", 0).Decide(ctx, 3, []string{"w"})
		return err
	}
	return errors.New("no such method")
}

// TestRoleAuthorization calls every method of the parameter server and of
// the coordinator, over real mutual TLS, with certificates of every role
// and of another run: a call reaches its handler only if the caller's role
// may make it, and is refused with PermissionDenied otherwise. Servers
// whose certificate names no role accept every certificate of the CA, as
// before roles.
func TestRoleAuthorization(t *testing.T) {
	pki := certstest.New(t)
	const run = "r"
	ps, work := new(countingPS), new(countingBN)
	var decides atomic.Int32
	registerAll := func(g *grpc.Server) {
		Register(g, ps)
		RegisterWork(g, work)
		RegisterSteps(g, stepsFunc(func(ctx context.Context, req *DecideRequest) (*DecideReply, error) {
			decides.Add(1)
			return &DecideReply{RunID: req.RunID, Server: req.Server, Decision: Decision{Step: req.Step, Included: req.Complete}}, nil
		}))
	}
	calls := func() int32 { return ps.calls.Load() + work.calls.Load() + decides.Load() }
	psAddr := serveTLS(t, pki.Role(t, identity.ParamServer, run), run, registerAll)
	coordAddr := serveTLS(t, pki.Role(t, identity.Coordinator, run), run, registerAll)
	legacyAddr := serveTLS(t, pki.TLS, run, registerAll)

	clients := map[string]*tls.Config{
		"coordinator":       pki.Role(t, identity.Coordinator, run),
		"paramserver":       pki.Role(t, identity.ParamServer, run),
		"worker":            pki.Role(t, identity.Worker, run),
		"admin":             pki.Role(t, identity.Admin), // every run
		"worker other run":  pki.Role(t, identity.Worker, "other"),
		"coordinator other": pki.Role(t, identity.Coordinator, "other"),
		"node (no role)":    pki.TLS,
	}
	// who may call what, written out rather than read from Callers
	tests := []struct {
		method string
		server string // "ps" or "coord": the server whose service it is
		allow  []string
	}{
		{MethodPush, "ps", []string{"worker"}},
		{MethodPull, "ps", []string{"worker", "coordinator"}},
		{MethodIdle, "ps", []string{"worker"}},
		{MethodInit, "ps", []string{"coordinator"}},
		{MethodCheckpoint, "ps", []string{"coordinator"}},
		{MethodStatus, "ps", []string{"coordinator", "admin"}},
		{MethodWorkNext, "coord", []string{"worker"}},
		{MethodReduceBN, "coord", []string{"worker"}},
		{MethodDecide, "coord", []string{"paramserver"}},
	}
	if len(tests) != len(Callers) {
		t.Errorf("%d methods tested, Callers has %d", len(tests), len(Callers))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tt := range tests {
		addr := psAddr
		if tt.server == "coord" {
			addr = coordAddr
		}
		for name, sec := range clients {
			allowed := false
			for _, a := range tt.allow {
				allowed = allowed || a == name
			}
			t.Run(tt.method[strings.LastIndex(tt.method, "/")+1:]+"/"+name, func(t *testing.T) {
				conn := dialTLS(t, addr, sec)
				before := calls()
				err := callMethod(ctx, conn, tt.method)
				reached := calls() - before
				if allowed {
					if err != nil || reached != 1 {
						t.Fatalf("got %v (%d calls reached the handler), want an answer", err, reached)
					}
					return
				}
				if status.Code(err) != codes.PermissionDenied {
					t.Fatalf("got %v, want PermissionDenied", err)
				}
				if reached != 0 {
					t.Errorf("a refused call reached the handler")
				}
				t.Logf("refused: %v", err)
			})
		}
		t.Run(tt.method[strings.LastIndex(tt.method, "/")+1:]+"/server without role", func(t *testing.T) {
			// a node certificate checks no roles: a worker may call anything
			if err := callMethod(ctx, dialTLS(t, legacyAddr, clients["worker"]), tt.method); err != nil {
				t.Errorf("got %v, want an answer", err)
			}
		})
	}
}

// TestClientChecksServerRole: a client accepts a server only in the role
// it dials, of its run. A worker's certificate cannot serve as a
// parameter server or as the coordinator to a worker, a parameter server
// of another run cannot hand out weights, and a server of no role is
// refused by a client whose certificate names one; the refusal is at the
// handshake, so no request is sent.
func TestClientChecksServerRole(t *testing.T) {
	pki := certstest.New(t)
	const run = "r"
	ps := new(countingPS)
	work := new(countingBN)
	register := func(g *grpc.Server) { Register(g, ps); RegisterWork(g, work) }
	worker := pki.Role(t, identity.Worker, run)
	tests := []struct {
		name   string
		server *tls.Config
		want   identity.Role // the role the worker dials
		method string
		err    error // nil: accepted
	}{
		{"parameter server", pki.Role(t, identity.ParamServer, run), identity.ParamServer, MethodPull, nil},
		{"coordinator", pki.Role(t, identity.Coordinator, run), identity.Coordinator, MethodWorkNext, nil},
		{"worker as parameter server", pki.Role(t, identity.Worker, run), identity.ParamServer, MethodPull, identity.ErrRole},
		{"worker as coordinator", pki.Role(t, identity.Worker, run), identity.Coordinator, MethodWorkNext, identity.ErrRole},
		{"parameter server as coordinator", pki.Role(t, identity.ParamServer, run), identity.Coordinator, MethodWorkNext, identity.ErrRole},
		{"parameter server of another run", pki.Role(t, identity.ParamServer, "other"), identity.ParamServer, MethodPull, identity.ErrRun},
		{"server without role", pki.TLS, identity.ParamServer, MethodPull, identity.ErrRole},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// the server checks no caller here (run ""): only the
			// client's check is under test
			addr := serveTLS(t, tt.server, "", register)
			conn := dialTLS(t, addr, identity.ForPeer(worker, run, tt.want))
			before := ps.calls.Load() + work.calls.Load()
			err := callMethod(ctx, conn, tt.method)
			reached := ps.calls.Load() + work.calls.Load() - before
			if tt.err == nil {
				if err != nil || reached != 1 {
					t.Fatalf("got %v (%d calls reached), want an answer", err, reached)
				}
				return
			}
			if err == nil || status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tt.err.Error()) {
				t.Fatalf("got %v, want Unavailable saying %q", err, tt.err)
			}
			if reached != 0 {
				t.Errorf("%d calls reached the server", reached)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// serverSerial is the serial number of the certificate the server of conn
// presented for one call.
func serverSerial(ctx context.Context, t *testing.T, conn *grpc.ClientConn) string {
	t.Helper()
	var p peer.Peer
	if err := conn.Invoke(ctx, MethodStatus, &StatusRequest{RunID: "r", WorkerID: "w"}, new(StatusReply), grpc.Peer(&p)); err != nil {
		t.Fatalf("Status: %v", err)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		t.Fatalf("no TLS peer: %v", p.AuthInfo)
	}
	return info.State.PeerCertificates[0].SerialNumber.String()
}

// TestRotation replaces a running server's key pair with one of a new CA,
// and its clients' CA file with a bundle of both CAs, on disk: new
// connections use the new pair and trust the new CA, without a restart,
// and a connection opened before keeps working.
func TestRotation(t *testing.T) {
	pki := certstest.New(t)
	const run = "r"
	srvFiles := pki.Pair(t, "ps", identity.Identity{Roles: []identity.Role{identity.ParamServer}, Runs: []string{run}})
	cliFiles := pki.Pair(t, "coord", identity.Identity{Roles: []identity.Role{identity.Coordinator}, Runs: []string{run}})
	// each side has its own copy of the CA file, as on separate machines
	srvFiles.CA, cliFiles.CA = copyFile(t, pki.Files.CA, "srv-ca.pem"), copyFile(t, pki.Files.CA, "cli-ca.pem")
	srvTLS, err := srvFiles.Load()
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := cliFiles.Load()
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, srvTLS, run, func(g *grpc.Server) { Register(g, new(countingPS)) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := dialTLS(t, addr, identity.ForPeer(cliTLS, run, identity.ParamServer))
	first := serverSerial(ctx, t, old)

	// a new CA; both CA files trust both CAs, the server gets a pair of
	// the new one
	next, err := certs.NewCA("next CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundle := append(readFile(t, pki.Files.CA), next.CertPEM...)
	certPEM, keyPEM, err := next.IssueFor("tailor ps", []string{"127.0.0.1"}, identity.Identity{Roles: []identity.Role{identity.ParamServer}, Runs: []string{run}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cliFiles.CA, bundle)
	writeFile(t, srvFiles.CA, bundle)
	writeFile(t, srvFiles.Key, keyPEM)
	writeFile(t, srvFiles.Cert, certPEM)

	// new connections pick it up within a check interval or two
	deadline := time.Now().Add(10 * certs.ReloadCheck)
	for {
		conn := dialTLS(t, addr, identity.ForPeer(cliTLS, run, identity.ParamServer))
		got := serverSerial(ctx, t, conn)
		conn.Close()
		if got != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections still get the old certificate after %v", 10*certs.ReloadCheck)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// the connection of before still answers
	if got := serverSerial(ctx, t, old); got != first {
		t.Errorf("the old connection now sees serial %s, want %s", got, first)
	}
}

func copyFile(t *testing.T, from, name string) string {
	t.Helper()
	to := t.TempDir() + "/" + name
	writeFile(t, to, readFile(t, from))
	return to
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
