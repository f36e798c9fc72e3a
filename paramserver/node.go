package paramserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/identity"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/store"
)

// Addrs keys of a parameter server's membership record.
const (
	AddrGRPC = "grpc"
)

// NodeConfig is a parameter server process in a cluster run.
type NodeConfig struct {
	// Node is how the process reaches the run; its TLS, if set, is mutual
	// TLS on the gRPC server and on the connection to the leading
	// coordinator.
	job.Node
	Index int
}

// RunNode is a parameter server's life in a cluster run: it reads the run's
// spec and the model's tensor spec from etcd, joins the membership (role
// paramserver, rank = index) with its addresses, takes the active workers
// from the membership and, in sync mode, the step decisions from the leader
// coordinator, and serves until ctx ends. Its weights arrive by Init from the
// coordinator.
func RunNode(ctx context.Context, cfg NodeConfig) error {
	if cfg.Index < 0 {
		return fmt.Errorf("paramserver node: index %d: want ≥ 0", cfg.Index)
	}
	if err := cfg.Node.Validate(); err != nil {
		return fmt.Errorf("paramserver node: %w", err)
	}
	log := cfg.Logger()
	listen := cfg.ListenAddr()
	// after a preemption notice, the server has the grace to see its
	// state checkpointed
	ctx, cancel := cfg.GraceContext(ctx)
	defer cancel()
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("paramserver listener: %w", err)
	}
	defer lis.Close()
	sess, err := job.Join(ctx, cfg.Node, cluster.Member{ID: fmt.Sprintf("ps%d", cfg.Index), Role: cluster.RoleParamServer, Rank: cfg.Index,
		Addrs: map[string]string{AddrGRPC: lis.Addr().String()}})
	if err != nil {
		return err
	}
	defer sess.Close(ctx)
	spec, mem, cli, keys := sess.Spec, sess.Members, sess.Client, sess.Keys
	if cfg.Index >= spec.ParamServers {
		return fmt.Errorf("index %d: the run has %d parameter servers", cfg.Index, spec.ParamServers)
	}
	var wspec wire.Spec
	for {
		_, err := cluster.GetJSON(ctx, cli, keys.WireSpec(), &wspec)
		if err == nil {
			break
		}
		if !errors.Is(err, cluster.ErrNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the model spec: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// checkpoint parts are written and read with retries (spec.StoreRetry)
	retry := spec.StorePolicy(log)
	data, err := store.OpenRetry(ctx, spec.Data, retry)
	if err != nil {
		return err
	}
	ckpts, err := job.OpenCheckpoints(ctx, spec, data, retry)
	if err != nil {
		return err
	}
	pc := DefaultConfig(cfg.Run, wspec)
	pc.Checkpoints = ckpts
	pc.Index, pc.Servers, pc.Adam, pc.Mode = cfg.Index, spec.ParamServers, spec.AdamConfig(), spec.Mode
	pc.Staleness, pc.StepDeadline, pc.Logger = spec.Staleness, spec.StepDeadline, log
	if spec.Mode == job.ModeSync {
		pc.StepLR = spec.StepLRFactor
	}
	pc.Encoding = spec.WireCompression().Encoding
	pc.TLS = cfg.TLS
	var ld *leaderDecider
	if pc.Mode == job.ModeSync {
		elect, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys, Self: mem.Self()})
		if err != nil {
			return err
		}
		ld = &leaderDecider{elect: elect, run: cfg.Run, index: cfg.Index, log: log, tls: cfg.TLS}
		defer ld.close()
		pc.Decider = ld
	} else {
		pc.SyncQuorum = spec.Quorum
	}
	// pushes are refused only once a worker's lease is gone: a false
	// suspicion by gossip (load, a healing partition) must not make one
	// server refuse a gradient another accepts
	workers := cluster.WatchRegisteredIDs(mem, cluster.RoleWorker)
	defer workers.Close()
	srv, err := New(pc, workers)
	if err != nil {
		return err
	}
	defer srv.Close()
	sess.ServeMetrics(srv.MetricsHandler())
	log.Info("serving", "index", cfg.Index, "addr", lis.Addr().String(), "mode", pc.Mode)
	// the server's life ends with the run's: once the leader records the
	// run as done, it stops (a container or unit then exits cleanly)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	finished := make(chan struct{})
	go func() {
		if job.WaitDone(sctx, cli, cfg.Run) {
			log.Info("the run is over")
			close(finished)
			stop()
		}
	}()
	preempted := make(chan struct{})
	go func() {
		// a preemption notice: the leader checkpoints (this server's part
		// with the others'), then the server stops serving
		select {
		case <-cfg.Drain:
		case <-sctx.Done():
			return
		}
		id := mem.Self().ID
		rev, err := job.AwaitPreemptCheckpoint(sctx, cli, keys, job.PreemptRequest{ID: id, Role: cluster.RoleParamServer, Index: cfg.Index, At: time.Now().UTC()}, cfg.Grace(), log)
		if err != nil && sctx.Err() == nil {
			log.Warn("preemption notice: no checkpoint", "err", err)
		}
		if rev > 0 {
			log.Info("preemption notice: the run is checkpointed; leaving", "revision", rev)
		}
		close(preempted)
		stop()
	}()
	err = srv.Serve(sctx, lis)
	select {
	case <-finished:
		return nil
	case <-preempted:
		return job.ErrPreempted
	default:
		if cfg.Draining() {
			return job.ErrPreempted // the grace ran out
		}
		return err
	}
}

// leaderDecider sends sync-step reports to whichever coordinator leads,
// reconnecting when the leader changes.
type leaderDecider struct {
	elect *cluster.Election
	run   string
	index int
	log   *slog.Logger
	tls   *tls.Config

	mu   sync.Mutex
	addr string
	conn *grpc.ClientConn
	dc   *wire.DeciderClient
}

func (d *leaderDecider) client(ctx context.Context) (*wire.DeciderClient, error) {
	l, err := d.elect.Leader(ctx)
	if err != nil {
		return nil, fmt.Errorf("no coordinator: %w", err)
	}
	addr := l.Member.Addrs[AddrGRPC]
	if addr == "" {
		return nil, errors.New("the leader publishes no gRPC address")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if addr == d.addr && d.dc != nil {
		return d.dc, nil
	}
	if d.conn != nil {
		d.conn.Close()
	}
	conn, err := grpc.NewClient(addr, wire.DialOptions(identity.ForPeer(d.tls, d.run, identity.Coordinator))...)
	if err != nil {
		return nil, err
	}
	d.addr, d.conn, d.dc = addr, conn, wire.NewDeciderClient(conn, d.run, d.index)
	return d.dc, nil
}

// Decide implements Decider.
func (d *leaderDecider) Decide(ctx context.Context, step int64, complete []string) (wire.Decision, error) {
	dc, err := d.client(ctx)
	if err != nil {
		return wire.Decision{}, err
	}
	dec, err := dc.Decide(ctx, step, complete)
	if err != nil && ctx.Err() == nil {
		// maybe the leader changed: reconnect on the next call
		d.mu.Lock()
		d.addr = ""
		d.mu.Unlock()
	}
	return dec, err
}

func (d *leaderDecider) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		d.conn.Close()
	}
}
