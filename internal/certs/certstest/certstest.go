// Package certstest makes TLS material for tests: a CA with a key pair in
// a temporary directory, and the client configurations that must be
// refused by a server requiring certificates of that CA.
package certstest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/identity"
)

// PKI is a CA and one "node" key pair for 127.0.0.1, ::1 and localhost,
// written to Dir.
type PKI struct {
	Dir   string
	CA    *certs.CA
	Files certs.Files // ca.pem, node.pem, node-key.pem
	// TLS is certs.Config of Files: what every role of the cluster uses.
	TLS *tls.Config
}

const validFor = 24 * time.Hour

// New makes a PKI in a temporary directory of tb.
func New(tb testing.TB) *PKI {
	tb.Helper()
	dir := tb.TempDir()
	cfg := certs.DefaultInitConfig(dir)
	cfg.Days = 1
	if _, err := certs.Init(cfg); err != nil {
		tb.Fatalf("certs.Init: %v", err)
	}
	f := certs.Files{CA: filepath.Join(dir, certs.CAFile), Cert: filepath.Join(dir, certs.CertFile(certs.NodeName)), Key: filepath.Join(dir, certs.KeyFile(certs.NodeName))}
	c, err := static(f)
	if err != nil {
		tb.Fatalf("load %v: %v", f, err)
	}
	ca, err := certs.LoadCA(f.CA, filepath.Join(dir, certs.CAKeyFile))
	if err != nil {
		tb.Fatal(err)
	}
	return &PKI{Dir: dir, CA: ca, Files: f, TLS: c}
}

// static is certs.Config of f's files: a config that does not re-read
// them, whose fields a test may change (WrongServer's RootCAs).
func static(f certs.Files) (*tls.Config, error) {
	var b [3][]byte
	for i, p := range []string{f.CA, f.Cert, f.Key} {
		var err error
		if b[i], err = os.ReadFile(p); err != nil {
			return nil, err
		}
	}
	return certs.Config(b[0], b[1], b[2])
}

// Pair writes a key pair of the PKI's CA named name (name.pem,
// name-key.pem in Dir), for 127.0.0.1, ::1 and localhost, whose
// certificate names id; it returns the files of the pair with the CA.
func (p *PKI) Pair(tb testing.TB, name string, id identity.Identity) certs.Files {
	tb.Helper()
	cert, key, err := p.CA.IssueFor("tailor "+name, []string{"127.0.0.1", "::1", "localhost"}, id, validFor)
	if err != nil {
		tb.Fatal(err)
	}
	f := certs.Files{CA: p.Files.CA, Cert: filepath.Join(p.Dir, certs.CertFile(name)), Key: filepath.Join(p.Dir, certs.KeyFile(name))}
	if err := os.WriteFile(f.Cert, cert, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(f.Key, key, 0o600); err != nil {
		tb.Fatal(err)
	}
	return f
}

// Role is the static TLS config of a new pair of the PKI (Pair) whose
// certificate names role and runs (none: every run).
func (p *PKI) Role(tb testing.TB, role identity.Role, runs ...string) *tls.Config {
	tb.Helper()
	name := string(role)
	for _, r := range runs {
		name += "-" + r
	}
	c, err := static(p.Pair(tb, name, identity.Identity{Roles: []identity.Role{role}, Runs: runs}))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// Roots is a pool of the PKI's CA.
func (p *PKI) Roots(tb testing.TB) *x509.CertPool {
	tb.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	return pool
}

// NoCert trusts the PKI's CA but has no certificate to present.
func (p *PKI) NoCert(tb testing.TB) *tls.Config {
	tb.Helper()
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.Roots(tb)}
}

// SelfSigned trusts the PKI's CA and presents a self-signed certificate
// (sent even though the server asks for certificates of its CA).
func (p *PKI) SelfSigned(tb testing.TB) *tls.Config {
	tb.Helper()
	self, err := certs.NewCA("self-signed", validFor)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := self.KeyPEM()
	if err != nil {
		tb.Fatal(err)
	}
	return p.presenting(tb, self.CertPEM, key)
}

// OtherCA trusts the PKI's CA and presents a certificate for the same hosts
// from another CA.
func (p *PKI) OtherCA(tb testing.TB) *tls.Config {
	tb.Helper()
	other, err := certs.NewCA("another CA", validFor)
	if err != nil {
		tb.Fatal(err)
	}
	cert, key, err := other.Issue("tailor node", []string{"127.0.0.1", "::1", "localhost"}, validFor)
	if err != nil {
		tb.Fatal(err)
	}
	return p.presenting(tb, cert, key)
}

// WrongServer presents the PKI's own key pair but trusts another CA: a
// client that must not accept the cluster's servers.
func (p *PKI) WrongServer(tb testing.TB) *tls.Config {
	tb.Helper()
	other, err := certs.NewCA("another CA", validFor)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(other.Cert)
	c := p.TLS.Clone()
	c.RootCAs = pool
	return c
}

func (p *PKI) presenting(tb testing.TB, certPEM, keyPEM []byte) *tls.Config {
	tb.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    p.Roots(tb),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &pair, nil
		},
	}
}

// Refused are the client configurations a server of the PKI must refuse,
// by name; nil means plaintext.
func (p *PKI) Refused(tb testing.TB) map[string]*tls.Config {
	tb.Helper()
	return map[string]*tls.Config{
		"plaintext":    nil,
		"no cert":      p.NoCert(tb),
		"self-signed":  p.SelfSigned(tb),
		"other CA":     p.OtherCA(tb),
		"wrong server": p.WrongServer(tb),
	}
}
