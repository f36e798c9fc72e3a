package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
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
	// clientv3 reports a refused certificate as a timeout: shake hands
	// once first, to fail fast with what is wrong
	for _, e := range endpoints {
		if err := probeTLS(e, auth.TLS); err != nil {
			return nil, fmt.Errorf("cluster: etcd %s (%v): %w", e, auth, err)
		}
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
		// reconnect within a second of etcd coming back (gRPC's default
		// backoff grows to 2 min): a restarted etcd extends every lease
		// by only one TTL, and the members must renew theirs in time
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		if auth.Password != "" {
			err = redacted{err, auth.Password}
		}
		return nil, fmt.Errorf("cluster: etcd client %v (%v): %w", endpoints, auth, err)
	}
	return cli, nil
}

// probeTimeout bounds probeTLS.
const probeTimeout = 2 * time.Second

// h2Preface is an HTTP/2 client connection preface and an empty SETTINGS
// frame: a server that accepted the client's certificate answers it.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// probeTLS shakes hands with an https:// endpoint as the client will, and
// returns the error if either side refuses the other's certificate. An
// endpoint that cannot be reached is no error here (etcd may start
// later), nor is anything but https://.
func probeTLS(endpoint string, sec *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if sec != nil {
		cfg = sec.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	cfg.NextProtos = []string{"h2"}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: probeTimeout}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" || errors.Is(err, context.DeadlineExceeded) {
			return nil // not reachable (yet): the client retries
		}
		if sec == nil {
			return fmt.Errorf("tls handshake: %w (give the etcd CA: --etcd-ca or --tls-ca)", err)
		}
		return fmt.Errorf("tls handshake: %w", err)
	}
	defer conn.Close()
	// with TLS 1.3 the server checks the client's certificate after the
	// client's handshake is done: its verdict comes with the first read
	conn.SetDeadline(time.Now().Add(probeTimeout))
	if _, err = io.WriteString(conn, h2Preface); err == nil {
		_, err = conn.Read(make([]byte, 1))
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return fmt.Errorf("etcd refused this client's certificate: %w", err)
	}
	return nil
}

// redacted is an error whose message has a secret masked; Unwrap keeps
// errors.Is working.
type redacted struct {
	err    error
	secret string
}

func (r redacted) Error() string { return strings.ReplaceAll(r.err.Error(), r.secret, "[redacted]") }
func (r redacted) Unwrap() error { return r.err }
