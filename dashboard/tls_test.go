package dashboard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

// Served with the run's mutual TLS (--secure), the dashboard answers a
// client with a certificate of the run's CA and refuses one without, or
// with another CA's.
func TestServerClientCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := clustertest.Client(t, clustertest.Etcd(t))
	fakeRun(t, ctx, cli, "r1", 1, "127.0.0.1:1")
	pair := func(ca *certs.CA) *tls.Config {
		t.Helper()
		cert, key, err := ca.Issue("node", []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := certs.Config(ca.CertPEM, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca, err := certs.NewCA("run", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server := pair(ca)
	cfg := DefaultConfig()
	cfg.Etcd, cfg.ServerTLS = cli, server
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, lis) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	u := URL(lis, true) + "run/r1"

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	stranger := pair(other)
	stranger.RootCAs = roots // it trusts the server, the server does not trust it
	for _, c := range []struct {
		name string
		tls  *tls.Config
		ok   bool
	}{
		{"the run's certificate", pair(ca), true},
		{"no certificate", &tls.Config{RootCAs: roots}, false},
		{"another CA's certificate", stranger, false},
	} {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.tls}, Timeout: 10 * time.Second}
		resp, err := hc.Get(u)
		if err == nil {
			resp.Body.Close()
		}
		if ok := err == nil && resp.StatusCode == http.StatusOK; ok != c.ok {
			t.Errorf("%s: GET %s: %v (%v), want answered %v", c.name, u, resp, err, c.ok)
		}
	}
}
