package certs

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tailorml/tailor/internal/cluster"
)

// EtcdFiles are the TLS files of an etcd client: etcd's own if any is
// given, else the roles' (wire) files when an endpoint is https://, else
// none.
func EtcdFiles(etcd, wire Files, endpoints []string) Files {
	if etcd.CA != "" || etcd.Cert != "" || etcd.Key != "" {
		return etcd
	}
	for _, e := range endpoints {
		if strings.HasPrefix(e, "https://") {
			return wire
		}
	}
	return Files{}
}

// ReadPassword reads the password in path, without surrounding white space
// (a trailing newline); an empty one is an error.
func ReadPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("etcd password: %w", err)
	}
	p := strings.TrimSpace(string(b))
	if p == "" {
		return "", fmt.Errorf("etcd password file %s is empty", path)
	}
	return p, nil
}

// EtcdPassword is etcd's password: the file's (ReadPassword), else the
// environment's TAILOR_ETCD_PASSWORD.
func EtcdPassword(file string) (string, error) {
	if file == "" {
		return os.Getenv("TAILOR_ETCD_PASSWORD"), nil
	}
	return ReadPassword(file)
}

// EtcdAuth is an etcd client's TLS (f) and credentials (user, and the
// password of EtcdPassword(passwordFile)) for endpoints, checked.
func EtcdAuth(endpoints []string, f Files, user, passwordFile string) (cluster.EtcdAuth, error) {
	var a cluster.EtcdAuth
	if f.Enabled() && f.CA == "" {
		return a, errors.New("--etcd-cert/--etcd-key need --etcd-ca")
	}
	var err error
	if a.TLS, err = f.LoadClient(); err != nil {
		return a, fmt.Errorf("etcd tls: %w", err)
	}
	if a.Password, err = EtcdPassword(passwordFile); err != nil {
		return a, err
	}
	a.Username = user
	switch {
	case a.Username != "" && a.Password == "":
		return a, fmt.Errorf("--etcd-user %s needs --etcd-password-file or env TAILOR_ETCD_PASSWORD", a.Username)
	case a.Username == "" && a.Password != "":
		return a, errors.New("an etcd password is set but no --etcd-user")
	}
	return a, a.Validate(endpoints)
}
