package paramserver

import (
	"context"
	"crypto/tls"
	"github.com/tailorml/tailor/internal/job"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/certs/certstest"
	"github.com/tailorml/tailor/internal/wire"
)

// A parameter server with mutual TLS takes pushes and serves pulls only to
// clients with a certificate of its CA: a client with no certificate, a
// self-signed one or one of another CA (or a plaintext client, or one that
// does not trust the server) can neither push a gradient nor pull weights,
// and its attempts change nothing.
func TestMutualTLS(t *testing.T) {
	pki := certstest.New(t)
	cfgs := []Config{testConfig(t, job.ModeAsync, 2, 0), testConfig(t, job.ModeAsync, 2, 1)}
	for i := range cfgs {
		cfgs[i].TLS = pki.TLS
	}
	c := startCluster(t, NewStaticMembers("w0", "w1"), cfgs...)
	client := func(t *testing.T, worker string, sec *tls.Config) *wire.Client {
		t.Helper()
		cl, err := wire.NewClient(wire.ClientConfig{RunID: testRun, WorkerID: worker, Addrs: c.addrs, Spec: c.spec, ChunkBytes: wire.MinChunkBytes, TLS: sec})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	init := tensors(c.spec, 42)
	if err := client(t, "coordinator", pki.TLS).Init(ctx, init); err != nil {
		t.Fatalf("Init with the cluster's certificate: %v", err)
	}

	good := client(t, "w0", pki.TLS)
	into := zeros(c.spec)
	v, err := good.Pull(ctx, 0, into)
	if err != nil {
		t.Fatalf("Pull with the cluster's certificate: %v", err)
	}
	sameBits(t, c.spec, into, init)
	if v, err = good.Push(ctx, 0, v, grad(c.spec, 0, 0)); err != nil || v != 1 {
		t.Fatalf("Push with the cluster's certificate = %d, %v; want version 1", v, err)
	}
	if _, err := good.Pull(ctx, 1, into); err != nil {
		t.Fatalf("Pull after the push: %v", err)
	}
	want := clone(into)
	before := []*wire.StatusReply{c.status(t, 0), c.status(t, 1)}

	for name, sec := range pki.Refused(t) {
		t.Run(name, func(t *testing.T) {
			bad := client(t, "w1", sec)
			_, err := bad.Push(ctx, 1, 1, grad(c.spec, 1, 1))
			if err == nil || status.Code(err) != codes.Unavailable {
				t.Errorf("Push = %v, want a refused connection (Unavailable)", err)
			}
			got := tensors(c.spec, 7)
			if _, err := bad.Pull(ctx, 0, got); err == nil || status.Code(err) != codes.Unavailable {
				t.Errorf("Pull = %v, want a refused connection (Unavailable)", err)
			}
			t.Logf("push refused: %v", err)
			if _, err := bad.Status(ctx); err == nil {
				t.Error("Status answered")
			}
		})
	}
	for i, b := range before {
		a := c.status(t, i)
		if a.Version != b.Version || a.Accepted != b.Accepted || a.BytesIn != b.BytesIn || a.BytesOut != b.BytesOut {
			t.Errorf("server %d changed by refused clients: version %d→%d, accepted %d→%d, bytes in %d→%d, out %d→%d",
				i, b.Version, a.Version, b.Accepted, a.Accepted, b.BytesIn, a.BytesIn, b.BytesOut, a.BytesOut)
		}
	}
	// the cluster's clients still work
	if _, err := good.Pull(ctx, 1, into); err != nil {
		t.Fatal(err)
	}
	sameBits(t, c.spec, into, want)
}
