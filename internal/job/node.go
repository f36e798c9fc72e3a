package job

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
)

// DefaultListen is a role's gRPC listen address when none is given: a free
// loopback port.
const DefaultListen = "127.0.0.1:0"

// Node is how one process of a run (coordinator, parameter server or
// worker) reaches it: the run, etcd and its credentials, its listen and
// advertised addresses, gossip and mutual TLS. The three roles' configs
// embed it, so a setting of this kind is written once.
type Node struct {
	Run  string
	Etcd []string
	// EtcdAuth is the etcd client's TLS and credentials.
	EtcdAuth cluster.EtcdAuth
	// Listen is the gRPC listen address of the roles that serve gRPC (the
	// coordinator and the parameter servers); "" is DefaultListen.
	Listen      string
	MetricsAddr string // host:port for /metrics; empty: none
	GossipBind  string // host:port for memberlist; empty: a free loopback port
	// Advertise, if set, is the host peers dial this process at (a
	// container's or VM's name or address): every published address —
	// gRPC, /metrics, gossip — is Advertise with its listener's port,
	// instead of the listen address (0.0.0.0 is no address to dial). The
	// gossip bind address then needs a fixed port.
	Advertise string
	SecretKey []byte // gossip encryption key: 16, 24 or 32 bytes, or none
	// GossipKeyFile, if set, holds the gossip keys instead of SecretKey
	// and is read again while the process runs (cluster.MembershipConfig
	// KeyFile): the key rotates without a restart.
	GossipKeyFile string
	// TLS, if set, is mutual TLS on the process's gRPC server and on its
	// connections to the other roles (certs.Config); nil is plaintext.
	TLS *tls.Config
	Log *slog.Logger
	// Drain, when closed, is a preemption notice (SIGTERM): the process
	// leaves the run cleanly within PreemptGrace — a worker after its
	// step, the leader after a checkpoint, a parameter server once the
	// leader has checkpointed. Nil never closes.
	Drain <-chan struct{}
	// PreemptGrace bounds the clean leave after Drain; 0 is
	// DefaultPreemptGrace.
	PreemptGrace time.Duration
}

// DefaultPreemptGrace is how long a process takes to leave the run after a
// preemption notice, at most: within the 30 s GCE gives a preemptible VM
// (AWS gives 120 s).
const DefaultPreemptGrace = 25 * time.Second

// ErrPreempted ends a role that left the run on a preemption notice
// (Node.Drain).
var ErrPreempted = errors.New("left the run on a preemption notice")

// Draining reports whether Drain is closed.
func (n Node) Draining() bool {
	select {
	case <-n.Drain:
		return true
	default:
		return false
	}
}

// Grace is PreemptGrace, or DefaultPreemptGrace when it is 0.
func (n Node) Grace() time.Duration {
	if n.PreemptGrace <= 0 {
		return DefaultPreemptGrace
	}
	return n.PreemptGrace
}

// GraceContext returns a context that ends with ctx, or Grace after Drain
// closes: the bound of a clean leave. cancel releases it.
func (n Node) GraceContext(ctx context.Context) (context.Context, context.CancelFunc) {
	gctx, cancel := context.WithCancel(ctx)
	if n.Drain == nil {
		return gctx, cancel
	}
	go func() {
		select {
		case <-n.Drain:
		case <-gctx.Done():
			return
		}
		t := time.NewTimer(n.Grace())
		defer t.Stop()
		select {
		case <-t.C:
			n.Logger().Warn("preemption grace over: stopping", "grace", n.Grace())
			cancel()
		case <-gctx.Done():
		}
	}()
	return gctx, cancel
}

// Validate checks what every role needs: a run, etcd endpoints, and a
// gossip key of a length memberlist takes.
func (n Node) Validate() error {
	var errs []error
	if n.Run == "" {
		errs = append(errs, errors.New("no run id"))
	}
	if len(n.Etcd) == 0 {
		errs = append(errs, errors.New("no etcd endpoints"))
	}
	if k := len(n.SecretKey); k != 0 && k != 16 && k != 24 && k != 32 {
		errs = append(errs, fmt.Errorf("gossip key of %d bytes: want 16, 24 or 32", k))
	}
	return errors.Join(errs...)
}

// ListenAddr is Listen, or DefaultListen when it is empty.
func (n Node) ListenAddr() string {
	if n.Listen == "" {
		return DefaultListen
	}
	return n.Listen
}

// Logger is Log, or a logger that discards when it is nil.
func (n Node) Logger() *slog.Logger {
	if n.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.Log
}
