// Package certstest makes TLS material for tests: a CA with a key pair in
// a temporary directory, and the client configurations that must be
// refused by a server requiring certificates of that CA.
package certstest

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/certs"
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
	c, err := f.Load()
	if err != nil {
		tb.Fatalf("load %v: %v", f, err)
	}
	ca, err := certs.LoadCA(f.CA, filepath.Join(dir, certs.CAKeyFile))
	if err != nil {
		tb.Fatal(err)
	}
	return &PKI{Dir: dir, CA: ca, Files: f, TLS: c}
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
