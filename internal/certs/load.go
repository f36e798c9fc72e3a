package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
)

// Files names a process's TLS material: the CA that signs every peer's
// certificate, and this process's certificate and private key, all PEM.
// The zero value means no TLS.
type Files struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate reports a partial set: TLS needs all three files or none.
func (f Files) Validate() error {
	if f.Enabled() && (f.CA == "" || f.Cert == "" || f.Key == "") {
		return fmt.Errorf("certs: mutual TLS needs a CA, a certificate and a key file (got ca=%q cert=%q key=%q)", f.CA, f.Cert, f.Key)
	}
	return nil
}

// String names the files (never their contents).
func (f Files) String() string {
	if !f.Enabled() {
		return "tls=off"
	}
	return fmt.Sprintf("tls=on ca=%s cert=%s key=%s", f.CA, f.Cert, f.Key)
}

// LogValue is String, for slog.
func (f Files) LogValue() slog.Value { return slog.StringValue(f.String()) }

// Load reads the files and returns the tls.Config of Config, or nil
// without error when f is the zero value (plaintext).
func (f Files) Load() (*tls.Config, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, nil
	}
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("certs: ca: %w", err)
	}
	cert, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("certs: certificate: %w", err)
	}
	key, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: key: %w", err)
	}
	c, err := Config(ca, cert, key)
	if err != nil {
		// the error names files, never their bytes
		return nil, fmt.Errorf("%w (ca %s, certificate %s, key %s)", err, f.CA, f.Cert, f.Key)
	}
	return c, nil
}

// ErrNoCertificates means a CA file holds no PEM certificate.
var ErrNoCertificates = errors.New("certs: no PEM certificates in the CA file")

// Config is the tls.Config of mutual TLS with one CA, for either end of a
// connection: as a server it presents the key pair and requires a client
// certificate signed by the CA; as a client it verifies the server against
// the CA and presents the key pair. TLS 1.2 is the minimum. The same value
// may be used for both (crypto/tls ignores the other end's fields).
func Config(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, ErrNoCertificates
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// crypto/tls's errors describe the PEM blocks, not the key
		return nil, fmt.Errorf("certs: key pair: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: certificate: %w", err)
		}
	}
	// a pair from another CA is refused by every peer: say so now
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("certs: the certificate is not signed by the CA: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// LoadClient reads the files of a TLS client that may have no key pair
// (a server without client certificate auth, such as etcd without
// --client-cert-auth): the CA is required, the certificate and key only
// together. It returns nil without error when f is the zero value.
func (f Files) LoadClient() (*tls.Config, error) {
	if !f.Enabled() {
		return nil, nil
	}
	if f.Cert != "" || f.Key != "" {
		return f.Load()
	}
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("certs: ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%w (%s)", ErrNoCertificates, f.CA)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}
