package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/tailorml/tailor/internal/identity"
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
// without error when f is the zero value (plaintext). The config re-reads
// the files when they change (Watch).
func (f Files) Load() (*tls.Config, error) { return f.Watch(nil) }

// Watch is Load with a logger for reloads. The config it returns presents
// the files' current key pair and trusts their current CAs, without a
// restart: before a handshake (at most once per ReloadCheck) it compares
// the files' modification times and sizes with those it read, and reads
// them again if any changed. New material that does not load (a pair
// half written, a key that is not the certificate's, a certificate the CA
// did not sign) is logged and not used: the config keeps the last good
// material and tries again at the next check. Connections already open
// keep theirs. A server gets the current material from crypto/tls
// (GetConfigForClient, GetCertificate); a client gets its key pair from
// GetClientCertificate and, through identity.Current (the wire package
// calls it before every handshake), its CAs. Other clients (etcd's) trust
// the CAs read at start.
func (f Files) Watch(log *slog.Logger) (*tls.Config, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &reloader{files: f, log: log}
	st, err := f.stamps()
	if err != nil {
		return nil, err
	}
	c, err := f.read()
	if err != nil {
		return nil, err
	}
	r.cur, r.seen, r.checked = c, st, time.Now()
	// clients (and their clones with the same RootCAs) get the current
	// material through identity.Current
	identity.Reloading(c.RootCAs, r.current)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    c.RootCAs,
		ClientCAs:  c.ClientCAs,
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &r.current().Certificates[0], nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &r.current().Certificates[0], nil
		},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.current(), nil },
	}, nil
}

// read reads the three files into a Config.
func (f Files) read() (*tls.Config, error) {
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

// ReloadCheck is how often, at most, a config of Watch looks at its files.
const ReloadCheck = time.Second

// stamp is what tells a changed file: its modification time and size.
type stamp struct {
	mod  time.Time
	size int64
}

type stamps [3]stamp

func (f Files) stamps() (stamps, error) {
	var st stamps
	for i, p := range []string{f.CA, f.Cert, f.Key} {
		fi, err := os.Stat(p)
		if err != nil {
			return st, fmt.Errorf("certs: %w", err)
		}
		st[i] = stamp{fi.ModTime(), fi.Size()}
	}
	return st, nil
}

// reloader holds a config's current material.
type reloader struct {
	files Files
	log   *slog.Logger

	mu      sync.Mutex
	cur     *tls.Config // Config of the files as last read well
	seen    stamps      // the files' stamps when cur was read
	failed  stamps      // the stamps of the last material that did not load
	checked time.Time
}

// current is the current material, read again first if the files changed.
func (r *reloader) current() *tls.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < ReloadCheck {
		return r.cur
	}
	r.checked = now
	st, err := r.files.stamps()
	if err != nil || st == r.seen {
		if err != nil && st != r.failed {
			r.failed = st
			r.log.Warn("tls files unreadable: keeping the loaded ones", "files", r.files, "err", err)
		}
		return r.cur
	}
	c, err := r.files.read()
	if err != nil {
		if st != r.failed {
			r.failed = st
			r.log.Warn("tls files changed but do not load: keeping the loaded ones", "files", r.files, "err", err)
		}
		return r.cur
	}
	r.cur, r.seen = c, st
	leaf := c.Certificates[0].Leaf
	r.log.Info("tls files reloaded", "files", r.files, "subject", leaf.Subject.CommonName, "not_after", leaf.NotAfter, "identity", identity.Of(leaf))
	return r.cur
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
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: certificate: %w", err)
		}
	}
	leaf := pair.Leaf
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
