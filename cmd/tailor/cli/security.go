package cli

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"os"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/cluster"
)

// securityFlags are the TLS and credential flags of every process that
// talks to the cluster: mutual TLS between the roles (--tls-*), and etcd's
// TLS and user (--etcd-*). Secrets are read from files or the
// environment, never taken as flag values (which show in ps and shell
// history).
type securityFlags struct {
	tlsCA, tlsCert, tlsKey    string
	etcdCA, etcdCert, etcdKey string
	etcdUser, etcdPassFile    string
}

func (s *securityFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&s.tlsCA, "tls-ca", os.Getenv("TAILOR_TLS_CA"), "CA certificate (PEM) of mutual TLS between the roles; with --tls-cert and --tls-key (env TAILOR_TLS_CA)")
	fs.StringVar(&s.tlsCert, "tls-cert", os.Getenv("TAILOR_TLS_CERT"), "this process's certificate (PEM), signed by --tls-ca (env TAILOR_TLS_CERT)")
	fs.StringVar(&s.tlsKey, "tls-key", os.Getenv("TAILOR_TLS_KEY"), "this process's private key (PEM) (env TAILOR_TLS_KEY)")
	fs.StringVar(&s.etcdCA, "etcd-ca", os.Getenv("TAILOR_ETCD_CA"), "CA certificate (PEM) of etcd's https:// endpoints (default: --tls-ca with its key pair) (env TAILOR_ETCD_CA)")
	fs.StringVar(&s.etcdCert, "etcd-cert", os.Getenv("TAILOR_ETCD_CERT"), "client certificate (PEM) for etcd's --client-cert-auth (env TAILOR_ETCD_CERT)")
	fs.StringVar(&s.etcdKey, "etcd-key", os.Getenv("TAILOR_ETCD_KEY"), "client private key (PEM) for etcd (env TAILOR_ETCD_KEY)")
	fs.StringVar(&s.etcdUser, "etcd-user", os.Getenv("TAILOR_ETCD_USER"), "etcd user name, with --etcd-password-file or env TAILOR_ETCD_PASSWORD (env TAILOR_ETCD_USER)")
	fs.StringVar(&s.etcdPassFile, "etcd-password-file", os.Getenv("TAILOR_ETCD_PASSWORD_FILE"), "file holding the etcd user's password (env TAILOR_ETCD_PASSWORD_FILE)")
}

// absolute makes the file names absolute, so they name the same files
// whatever the working directory.
func (s *securityFlags) absolute() {
	for _, p := range []*string{&s.tlsCA, &s.tlsCert, &s.tlsKey, &s.etcdCA, &s.etcdCert, &s.etcdKey, &s.etcdPassFile} {
		if *p != "" {
			*p = mustAbs(*p)
		}
	}
}

// wireFiles are the mutual TLS files of the roles' gRPC connections.
func (s *securityFlags) wireFiles() certs.Files {
	return certs.Files{CA: s.tlsCA, Cert: s.tlsCert, Key: s.tlsKey}
}

// wireTLS loads the roles' mutual TLS; nil without --tls-* (plaintext).
// The files are read again when they change (rotation), logged to log.
func (s *securityFlags) wireTLS(log *slog.Logger) (*tls.Config, error) {
	c, err := s.wireFiles().Watch(log)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca/--tls-cert/--tls-key: %w", err)
	}
	return c, nil
}

// etcdFiles are etcd's TLS files: --etcd-* if given, else --tls-* when an
// endpoint is https://, else none.
func (s *securityFlags) etcdFiles(endpoints []string) certs.Files {
	return certs.EtcdFiles(certs.Files{CA: s.etcdCA, Cert: s.etcdCert, Key: s.etcdKey}, s.wireFiles(), endpoints)
}

// etcdAuth is the etcd client's TLS and credentials for endpoints.
func (s *securityFlags) etcdAuth(endpoints []string) (cluster.EtcdAuth, error) {
	return certs.EtcdAuth(endpoints, s.etcdFiles(endpoints), s.etcdUser, s.etcdPassFile)
}

// etcdClient connects to the endpoints with the etcd flags.
func (s *securityFlags) etcdClient(endpoints []string) (*clientv3.Client, error) {
	auth, err := s.etcdAuth(endpoints)
	if err != nil {
		return nil, err
	}
	return cluster.NewAuthClient(endpoints, auth)
}
