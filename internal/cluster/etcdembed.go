package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// EtcdConfig configures an embedded single-member etcd. The zero value is
// usable: a temporary data dir, free ports on 127.0.0.1, default ticks.
type EtcdConfig struct {
	// Name is the etcd member name. Default "tailor".
	Name string
	// Dir is the data dir. If empty, a temporary dir is created and removed
	// by Close; give a Dir to keep the data across a restart.
	Dir string
	// ClientURL and PeerURL are the listen (and advertise) URLs, e.g.
	// "http://127.0.0.1:2379". If empty, a free port on 127.0.0.1 is used.
	// To restart on the same ports, pass back Config().ClientURL/PeerURL.
	ClientURL string
	PeerURL   string
	// FastTicks uses a 10 ms heartbeat and a 100 ms election timeout instead
	// of etcd's 100 ms / 1 s, so a fresh member is ready in ~0.1 s. For tests
	// and single-machine runs.
	FastTicks bool
	// UnsafeNoFsync skips fsync. Only for tests: a crash loses data.
	UnsafeNoFsync bool
	// ReadyTimeout bounds the wait for the server to serve. Default 10 s.
	ReadyTimeout time.Duration
	// LogLevel is etcd's zap log level ("debug" … "fatal"). Default "error".
	LogLevel string
	// LogOutputs are etcd's log outputs ("stderr", "stdout", a path).
	// Default "stderr".
	LogOutputs []string
	// CompactionRetention is the periodic auto-compaction retention
	// ("1h", "10m"). Default "1h"; "0" disables compaction.
	CompactionRetention string
	// ClientTLS, if its Cert and Key are set, serves clients over TLS
	// with that key pair (a free ClientURL is then https://; a given one
	// must be). With ClientCertAuth, clients must present a certificate
	// signed by ClientTLS.CA (etcd's --client-cert-auth).
	ClientTLS      TLSFiles
	ClientCertAuth bool
}

// TLSFiles are PEM files of a TLS endpoint: its key pair and the CA its
// peers' certificates are checked against.
type TLSFiles struct {
	CA, Cert, Key string
}

func (f TLSFiles) enabled() bool { return f.Cert != "" && f.Key != "" }

// EmbeddedEtcd is a running embedded etcd.
type EmbeddedEtcd struct {
	etcd    *embed.Etcd
	cfg     EtcdConfig // resolved: Dir and URLs filled in
	ownsDir bool

	closeOnce sync.Once
}

// ErrEtcdNotReady is returned when the embedded etcd does not become ready in
// time.
var ErrEtcdNotReady = errors.New("cluster: embedded etcd not ready")

// portAttempts is how many times StartEtcd picks fresh free ports when a
// picked port was taken between picking and binding.
const portAttempts = 3

// StartEtcd starts an embedded etcd and waits until it serves clients or
// ctx, ReadyTimeout or a startup error ends the wait.
func StartEtcd(ctx context.Context, cfg EtcdConfig) (*EmbeddedEtcd, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cluster: start etcd: %w", err)
	}
	if cfg.Name == "" {
		cfg.Name = "tailor"
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
	if len(cfg.LogOutputs) == 0 {
		cfg.LogOutputs = []string{"stderr"}
	}
	if cfg.CompactionRetention == "" {
		cfg.CompactionRetention = "1h"
	}
	ownsDir := false
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "tailor-etcd-")
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd data dir: %w", err)
		}
		cfg.Dir, ownsDir = dir, true
	}
	autoPorts := cfg.ClientURL == "" || cfg.PeerURL == ""
	clientScheme := "http"
	if cfg.ClientTLS.enabled() {
		clientScheme = "https"
		if cfg.ClientURL != "" && !strings.HasPrefix(cfg.ClientURL, "https://") {
			return nil, fmt.Errorf("cluster: etcd client url %q: want https:// with client TLS", cfg.ClientURL)
		}
	}
	if cfg.ClientCertAuth && cfg.ClientTLS.CA == "" {
		return nil, errors.New("cluster: etcd client cert auth needs a CA file")
	}

	var lastErr error
	for attempt := 0; attempt < portAttempts; attempt++ {
		try := cfg
		if try.ClientURL == "" {
			u, err := freeURL(clientScheme)
			if err != nil {
				lastErr = err
				break
			}
			try.ClientURL = u
		}
		if try.PeerURL == "" {
			u, err := freeURL("http")
			if err != nil {
				lastErr = err
				break
			}
			try.PeerURL = u
		}
		e, err := startEtcd(ctx, try)
		if err == nil {
			return &EmbeddedEtcd{etcd: e, cfg: try, ownsDir: ownsDir}, nil
		}
		lastErr = err
		if !autoPorts || !isAddrInUse(err) {
			break
		}
	}
	if ownsDir {
		os.RemoveAll(cfg.Dir)
	}
	return nil, lastErr
}

func startEtcd(ctx context.Context, cfg EtcdConfig) (*embed.Etcd, error) {
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	cu, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client url %q: %w", cfg.ClientURL, err)
	}
	pu, err := url.Parse(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd peer url %q: %w", cfg.PeerURL, err)
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	if cfg.FastTicks {
		ec.TickMs, ec.ElectionMs = 10, 100
	}
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.LogLevel = cfg.LogLevel
	ec.LogOutputs = cfg.LogOutputs
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = cfg.CompactionRetention
	if cfg.ClientTLS.enabled() {
		ec.ClientTLSInfo.CertFile = cfg.ClientTLS.Cert
		ec.ClientTLSInfo.KeyFile = cfg.ClientTLS.Key
		ec.ClientTLSInfo.TrustedCAFile = cfg.ClientTLS.CA
		ec.ClientTLSInfo.ClientCertAuth = cfg.ClientCertAuth
	}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("cluster: start etcd: %w", err)
	}
	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("cluster: start etcd: %w", err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("waited %v: %w", cfg.ReadyTimeout, ErrEtcdNotReady)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("cluster: start etcd: %w", ctx.Err())
	}
}

// Endpoints returns the client endpoints, for clientv3.Config.Endpoints.
func (e *EmbeddedEtcd) Endpoints() []string {
	return []string{e.cfg.ClientURL}
}

// Config returns the resolved configuration: the data dir and URLs in use.
// Starting a new EmbeddedEtcd with it restarts the same member on the same
// ports (unless Dir was temporary: Close removes it).
func (e *EmbeddedEtcd) Config() EtcdConfig {
	return e.cfg
}

// Err reports a fatal server error after startup (e.g. a listener failed).
func (e *EmbeddedEtcd) Err() <-chan error {
	return e.etcd.Err()
}

// Close stops the server and, if StartEtcd created the data dir, removes
// it. It is safe to call more than once and from several goroutines.
func (e *EmbeddedEtcd) Close() {
	e.closeOnce.Do(func() {
		e.etcd.Close()
		<-e.etcd.Server.StopNotify()
		if e.ownsDir {
			os.RemoveAll(e.cfg.Dir)
		}
	})
}

// freeURL returns scheme://127.0.0.1:<port> for a port that was free a
// moment ago.
func freeURL(scheme string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("cluster: pick a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return scheme + "://" + addr, nil
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) ||
		(err != nil && strings.Contains(err.Error(), "address already in use"))
}
