package paramserver

import (
	"context"
	"crypto/tls"
	"slices"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/certs/certstest"
	"github.com/tailorml/tailor/internal/wire"
)

// A server that comes back on another address (a restart on a new port):
// pulls through the old address fail, and after SetAddrs the same Client
// pulls and pushes through the new one, with and without mutual TLS (the
// new address is the TLS server name). Servers that did not move keep
// their connection.
func TestClientFollowsMovedServer(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name := "plaintext"
		if secure {
			name = "mtls"
		}
		t.Run(name, func(t *testing.T) {
			var sec *tls.Config
			if secure {
				sec = certstest.New(t).TLS
			}
			cfgs := syncConfigs(t, 2, func(c *Config) { c.TLS = sec })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// a is the run's servers; b's server 1 is server 1 restarted
			// elsewhere, with the same weights
			a := startCluster(t, NewStaticMembers("w0"), cfgs...)
			b := startCluster(t, NewStaticMembers("w0"), cfgs...)
			init := tensors(a.spec, 42)
			for _, c := range []*psCluster{a, b} {
				cl := newClient(t, c.addrs, c.spec, "coordinator", sec)
				if err := cl.Init(ctx, init); err != nil {
					t.Fatal(err)
				}
			}
			cl := newClient(t, a.addrs, a.spec, "w0", sec)
			into := zeros(a.spec)
			if _, err := cl.Pull(ctx, 0, into); err != nil {
				t.Fatalf("pull before the move: %v", err)
			}
			a.stops[1]()
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := cl.Pull(pctx, 0, into)
			pcancel()
			if err == nil {
				t.Fatal("pull from a stopped server succeeded")
			}
			moved, err := cl.SetAddrs([]string{a.addrs[0], b.addrs[1]})
			if err != nil || !slices.Equal(moved, []int{1}) {
				t.Fatalf("SetAddrs: moved %v, %v; want [1]", moved, err)
			}
			if got := cl.Addrs(); !slices.Equal(got, []string{a.addrs[0], b.addrs[1]}) {
				t.Errorf("Addrs() = %v", got)
			}
			// the connection dials the new address at once; calls fail fast
			// until it is up
			into = zeros(a.spec)
			var v int64
			eventually(t, 10*time.Second, "a pull through the new address", func() bool {
				v, err = cl.Pull(ctx, 0, into)
				return err == nil
			})
			if v != 0 {
				t.Fatalf("pull after the move: version %d", v)
			}
			sameBits(t, a.spec, into, init)
			if v, err := cl.Push(ctx, 0, 0, grad(a.spec, 0, 0)); err != nil || v != 1 {
				t.Fatalf("push after the move: version %d, %v; want 1", v, err)
			}
			if moved, err := cl.SetAddrs(cl.Addrs()); err != nil || len(moved) != 0 {
				t.Errorf("SetAddrs with the same addresses: moved %v, %v", moved, err)
			}
			if _, err := cl.SetAddrs([]string{a.addrs[0]}); err == nil {
				t.Error("SetAddrs with one address for two servers: no error")
			}
		})
	}
}

func newClient(tb testing.TB, addrs []string, spec wire.Spec, worker string, sec *tls.Config) *wire.Client {
	tb.Helper()
	cl, err := wire.NewClient(wire.ClientConfig{RunID: testRun, WorkerID: worker, Addrs: addrs, Spec: spec, ChunkBytes: wire.MinChunkBytes, TLS: sec})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cl.Close() })
	return cl
}
