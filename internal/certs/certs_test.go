package certs_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/identity"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	cfg := certs.DefaultInitConfig(dir)
	cfg.Hosts = []string{"ps0.example", "10.1.2.3"}
	cfg.Pairs = []string{"node", "worker"}
	files, err := certs.Init(cfg)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	want := []string{"ca.pem", "ca-key.pem", "node.pem", "node-key.pem", "worker.pem", "worker-key.pem"}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	if !slices.Equal(got, want) {
		t.Errorf("Init wrote %q, want %q", got, want)
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		wantMode := os.FileMode(0o644)
		if strings.HasSuffix(f, "-key.pem") {
			wantMode = 0o600
		}
		if st.Mode().Perm() != wantMode {
			t.Errorf("%s: mode %v, want %v", f, st.Mode().Perm(), wantMode)
		}
	}
	ca := readCert(t, filepath.Join(dir, "ca.pem"))
	if !ca.IsCA {
		t.Error("ca.pem is not a CA")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, pair := range cfg.Pairs {
		c := readCert(t, filepath.Join(dir, certs.CertFile(pair)))
		for _, host := range []string{"ps0.example", "10.1.2.3", "127.0.0.1", "localhost", "::1"} {
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := c.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("%s for %s, usage %v: %v", pair, host, usage, err)
				}
			}
		}
		if d := time.Until(c.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
			t.Errorf("%s valid for %v more, want a year", pair, d)
		}
		if _, err := (certs.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, certs.CertFile(pair)), Key: filepath.Join(dir, certs.KeyFile(pair))}).Load(); err != nil {
			t.Errorf("load %s: %v", pair, err)
		}
	}
	if _, err := certs.LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Errorf("LoadCA: %v", err)
	}

	// a second Init refuses to overwrite, and writes nothing
	before, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	os.Remove(filepath.Join(dir, "worker.pem"))
	if _, err := certs.Init(cfg); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("Init over existing files = %v, want ErrExists", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); !bytes.Equal(before, after) {
		t.Error("a refused Init changed ca.pem")
	}
	if _, err := os.Stat(filepath.Join(dir, "worker.pem")); err == nil {
		t.Error("a refused Init wrote worker.pem")
	}
	cfg.Force = true
	if _, err := certs.Init(cfg); err != nil {
		t.Fatalf("Init with Force: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); bytes.Equal(before, after) {
		t.Error("Init with Force kept the old CA")
	}
}

func TestInitConfigValidate(t *testing.T) {
	ok := certs.DefaultInitConfig("d")
	tests := []struct {
		name   string
		change func(*certs.InitConfig)
		want   string // "" for valid
	}{
		{"default", func(*certs.InitConfig) {}, ""},
		{"hosts", func(c *certs.InitConfig) { c.Hosts = []string{"a.b", "*.svc.local", "10.0.0.1", "fd00::1"} }, ""},
		{"no dir", func(c *certs.InitConfig) { c.Dir = "" }, "no directory"},
		{"zero days", func(c *certs.InitConfig) { c.Days = 0 }, "days 0"},
		{"no pairs", func(c *certs.InitConfig) { c.Pairs = nil }, "no key pairs"},
		{"pair is ca", func(c *certs.InitConfig) { c.Pairs = []string{"ca"} }, `pair name "ca"`},
		{"pair with a slash", func(c *certs.InitConfig) { c.Pairs = []string{"../x"} }, "pair name"},
		{"pair twice", func(c *certs.InitConfig) { c.Pairs = []string{"w", "w"} }, "named twice"},
		{"host with a port", func(c *certs.InitConfig) { c.Hosts = []string{"ps0:7000"} }, `host "ps0:7000"`},
		{"host with a space", func(c *certs.InitConfig) { c.Hosts = []string{"a b"} }, `host "a b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			err := c.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestFilesLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Init(certs.DefaultInitConfig(dir)); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := certs.Init(certs.DefaultInitConfig(other)); err != nil {
		t.Fatal(err)
	}
	const secret = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYBYTES\n-----END PRIVATE KEY-----\n"
	garbage := filepath.Join(t.TempDir(), "garbage-key.pem")
	if err := os.WriteFile(garbage, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	good := certs.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "node.pem"), Key: filepath.Join(dir, "node-key.pem")}
	tests := []struct {
		name   string
		change func(*certs.Files)
		want   string // "" for success
	}{
		{"good", func(*certs.Files) {}, ""},
		{"no key", func(f *certs.Files) { f.Key = "" }, "needs a CA, a certificate and a key"},
		{"no ca", func(f *certs.Files) { f.CA = "" }, "needs a CA, a certificate and a key"},
		{"missing file", func(f *certs.Files) { f.Cert = filepath.Join(dir, "nope.pem") }, "nope.pem"},
		{"ca is a key", func(f *certs.Files) { f.CA = f.Key }, "no PEM certificates"},
		{"pair of another CA", func(f *certs.Files) {
			f.Cert, f.Key = filepath.Join(other, "node.pem"), filepath.Join(other, "node-key.pem")
		}, "not signed by the CA"},
		{"key of another pair", func(f *certs.Files) { f.Key = filepath.Join(other, "node-key.pem") }, "key pair"},
		{"garbage key", func(f *certs.Files) { f.Key = garbage }, "key pair"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := good
			tt.change(&f)
			c, err := f.Load()
			if tt.want == "" {
				if err != nil || c == nil || c.RootCAs == nil || c.ClientCAs == nil || c.ClientAuth != tls.RequireAndVerifyClientCert {
					t.Fatalf("Load() = %v, %v; want a mutual TLS config", c, err)
				}
				// the key pair is the files' current one, for both ends
				if cur := identity.Current(c); len(cur.Certificates) != 1 {
					t.Fatalf("Load's current config has %d key pairs, want 1", len(cur.Certificates))
				}
				if pair, err := c.GetClientCertificate(&tls.CertificateRequestInfo{}); err != nil || len(pair.Certificate) == 0 {
					t.Fatalf("GetClientCertificate = %v, %v", pair, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load() = %v, want an error with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "TOPSECRET") || strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error shows key material: %v", err)
			}
		})
	}
	if c, err := (certs.Files{}).Load(); c != nil || err != nil {
		t.Errorf("zero Files: Load() = %v, %v; want nil, nil", c, err)
	}
	if c, err := (certs.Files{CA: good.CA}).LoadClient(); err != nil || c.RootCAs == nil || len(c.Certificates) != 0 {
		t.Errorf("LoadClient with a CA only = %v, %v", c, err)
	}
	if s := good.String(); !strings.Contains(s, good.Key) || strings.Contains(s, "PRIVATE") {
		t.Errorf("String() = %q", s)
	}
}
