package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/identity"
)

// Init's pairs named as roles name their role and the runs given; other
// pairs name nothing (node certificates, good for every role and run).
func TestInitRolePairs(t *testing.T) {
	dir := t.TempDir()
	cfg := certs.DefaultInitConfig(dir)
	cfg.Pairs = []string{"coordinator", "paramserver", "worker", "admin", "node", "etcd"}
	cfg.Runs = []string{"r1", "r2"}
	if _, err := certs.Init(cfg); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		pair  string
		roles []identity.Role
		runs  []string
	}{
		{"coordinator", []identity.Role{identity.Coordinator}, []string{"r1", "r2"}},
		{"paramserver", []identity.Role{identity.ParamServer}, []string{"r1", "r2"}},
		{"worker", []identity.Role{identity.Worker}, []string{"r1", "r2"}},
		{"admin", []identity.Role{identity.Admin}, []string{"r1", "r2"}},
		{"node", nil, nil},
		{"etcd", nil, nil},
	}
	for _, tt := range tests {
		c := readCert(t, filepath.Join(dir, certs.CertFile(tt.pair)))
		id := identity.Of(c)
		if !slices.Equal(id.Roles, tt.roles) || !slices.Equal(id.Runs, tt.runs) {
			t.Errorf("%s: got %s, want roles %v runs %v", tt.pair, id, tt.roles, tt.runs)
		}
		// the host names are still there
		if !slices.Contains(c.DNSNames, "localhost") {
			t.Errorf("%s: DNS names %v", tt.pair, c.DNSNames)
		}
	}
	bad := certs.DefaultInitConfig(dir)
	bad.Runs = []string{"a/b"}
	if err := bad.Validate(); err == nil {
		t.Error("a run id with a slash was accepted")
	}
}

// handshake connects a client of cli to a TLS server of srv and returns
// the server's certificate as the client saw it, or the error.
func handshake(t *testing.T, srv, cli *tls.Config) (string, error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		c.(*tls.Conn).Handshake()
		c.Close()
	}()
	cli = identity.Current(cli).Clone()
	cli.ServerName = "127.0.0.1"
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", lis.Addr().String(), cli)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// A config of Load serves the files' new pair once they change, keeps
// the last good pair while the new files do not load (a half-written
// rotation), and never fails a handshake meanwhile.
func TestLoadReloads(t *testing.T) {
	dir := t.TempDir()
	cfg := certs.DefaultInitConfig(dir)
	cfg.Pairs = []string{"node", "next"}
	if _, err := certs.Init(cfg); err != nil {
		t.Fatal(err)
	}
	f := certs.Files{CA: filepath.Join(dir, certs.CAFile), Cert: filepath.Join(dir, "node.pem"), Key: filepath.Join(dir, "node-key.pem")}
	srv, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := certs.Files{CA: f.CA, Cert: filepath.Join(dir, "next.pem"), Key: filepath.Join(dir, "next-key.pem")}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := handshake(t, srv, cli); err != nil || got != "tailor node" {
		t.Fatalf("first handshake: %q, %v; want tailor node", got, err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write := func(path string, b []byte) {
		// a new inode, and a modification time the old file cannot have
		tmp := path + ".new"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Duration(len(b)) * time.Millisecond)
		os.Chtimes(tmp, later, later)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	// half written: the new certificate with the old key
	write(f.Cert, read("next.pem"))
	for deadline := time.Now().Add(3 * certs.ReloadCheck); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got, err := handshake(t, srv, cli); err != nil || got != "tailor node" {
			t.Fatalf("with a half-written pair: %q, %v; want the old pair, tailor node", got, err)
		}
	}
	// the key follows
	write(f.Key, read("next-key.pem"))
	deadline := time.Now().Add(5 * certs.ReloadCheck)
	for {
		got, err := handshake(t, srv, cli)
		if err != nil {
			t.Fatal(err)
		}
		if got == "tailor next" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server still presents %q", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// a clone given other CAs keeps them: it is no longer the files'
	other := cli.Clone()
	other.RootCAs = x509.NewCertPool()
	if got := identity.Current(other); got.RootCAs != other.RootCAs {
		t.Error("Current replaced the CAs of a clone that has its own")
	}
	if got := identity.Current(cli); got.RootCAs == nil || got.RootCAs == other.RootCAs || len(got.Certificates) != 1 {
		t.Error("Current of the loaded config has no current material")
	}
	if _, err := handshake(t, srv, other); err == nil {
		t.Error("a client trusting no CA accepted the server")
	}
}
