package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdAuth is how a client proves itself to etcd and checks etcd: TLS (the
// CA that signed etcd's certificate and, for etcd's --client-cert-auth, a
// client key pair) and a user name and password (etcd's auth). The zero
// value is a plaintext, anonymous client.
//
// String and LogValue never show the password, so an EtcdAuth may be
// printed and logged.
type EtcdAuth struct {
	TLS      *tls.Config
	Username string
	Password string
}

// String says what is set, without the password.
func (a EtcdAuth) String() string {
	tlsOn, pw := "off", "unset"
	if a.TLS != nil {
		tlsOn = "on"
	}
	if a.Password != "" {
		pw = "set"
	}
	return fmt.Sprintf("tls=%s user=%q password=%s", tlsOn, a.Username, pw)
}

// GoString is String, so that %#v does not print the password either.
func (a EtcdAuth) GoString() string { return "cluster.EtcdAuth{" + a.String() + "}" }

// LogValue is String, for slog.
func (a EtcdAuth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Validate reports an EtcdAuth that cannot work with endpoints: a user
// without a password or the other way round, and plaintext endpoints
// (http://) with TLS. (https:// without TLS trusts the system's roots.)
func (a EtcdAuth) Validate(endpoints []string) error {
	if (a.Username == "") != (a.Password == "") {
		return errors.New("cluster: etcd auth needs both a user name and a password")
	}
	for _, e := range endpoints {
		if a.TLS != nil && strings.HasPrefix(e, "http://") {
			return fmt.Errorf("cluster: etcd endpoint %s is plaintext but TLS is configured: use https://", e)
		}
	}
	return nil
}

// NewClient returns a plaintext, anonymous etcd client: NewAuthClient with
// the zero EtcdAuth.
func NewClient(endpoints []string) (*clientv3.Client, error) {
	return NewAuthClient(endpoints, EtcdAuth{})
}

// NewAuthClient returns an etcd client with the settings every role uses: a
// dial timeout, gRPC keepalives that notice a dead connection within a few
// seconds, and no client-side logging (the client logs every retry while
// etcd is down), with auth's TLS and credentials. clientv3.New does not
// block without credentials: an unreachable etcd shows up as errors on the
// first requests, which callers retry. With credentials it authenticates
// first (for up to the dial timeout), so a wrong password fails here.
// Errors never hold the password.
func NewAuthClient(endpoints []string, auth EtcdAuth) (*clientv3.Client, error) {
	if err := auth.Validate(endpoints); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		TLS:                  auth.TLS,
		Username:             auth.Username,
		Password:             auth.Password,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		if auth.Password != "" {
			err = redacted{err, auth.Password}
		}
		return nil, fmt.Errorf("cluster: etcd client %v (%v): %w", endpoints, auth, err)
	}
	return cli, nil
}

// redacted is an error whose message has a secret masked; Unwrap keeps
// errors.Is working.
type redacted struct {
	err    error
	secret string
}

func (r redacted) Error() string { return strings.ReplaceAll(r.err.Error(), r.secret, "[redacted]") }
func (r redacted) Unwrap() error { return r.err }
