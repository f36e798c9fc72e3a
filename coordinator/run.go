package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
)

// Addrs keys of the coordinator's membership record.
const (
	AddrGRPC = "grpc"
)

// Config is one coordinator process (the leader or a standby).
type Config struct {
	// Node is how the process reaches the run; its TLS, if set, is mutual
	// TLS on the gRPC server (workers' work requests, parameter servers'
	// step reports) and on the connections to the parameter servers.
	job.Node
	ID string
	// ProgressInterval is how often the leader publishes its progress for
	// tailor status; 0 means ProgressInterval (the constant).
	ProgressInterval time.Duration
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.ID == "" {
		return errors.New("coordinator needs its own id")
	}
	if err := c.Node.Validate(); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	return nil
}

// Run joins the run, waits to be elected, then leads it to the end: it
// initialises the parameter servers, hands out batches step by step, decides
// sync steps, validates after each epoch and keeps the best model. A standby
// waits in the election until the leader dies.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger()
	// after a preemption notice, the leader has the grace to checkpoint
	ctx, cancel := cfg.GraceContext(ctx)
	defer cancel()
	lis, err := net.Listen("tcp", cfg.ListenAddr())
	if err != nil {
		return fmt.Errorf("coordinator listener: %w", err)
	}
	c := &candidate{cfg: cfg, log: log, lis: lis}
	defer func() { c.lis.Close() }()
	sess, err := job.Join(ctx, cfg.Node, cluster.Member{ID: cfg.ID, Role: cluster.RoleCoordinator, Addrs: map[string]string{AddrGRPC: lis.Addr().String()}})
	if err != nil {
		return err
	}
	defer sess.Close(ctx)
	// a standby serves an empty registry until it leads
	sess.ServeMetrics(promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{}))
	c.sess = sess
	if c.elect, err = cluster.NewElection(cluster.ElectionConfig{Client: sess.Client, Keys: sess.Keys, Self: sess.Members.Self()}); err != nil {
		return err
	}
	log.Info("standing for election", "run", cfg.Run, "id", cfg.ID)
	return c.stand(ctx)
}

// candidate is a coordinator in the run's election: a standby until it is
// elected, then the leader of one term after another until the run is over.
type candidate struct {
	cfg   Config
	log   *slog.Logger
	lis   net.Listener // the gRPC address the membership record publishes
	sess  *job.Session
	elect *cluster.Election
	// leading is set while a term is led: a preemption notice then waits
	// for the term's checkpoint
	leading atomic.Bool
	// lostAt is when the last term was lost to an expired election lease
	// (zero: it was not), lostErr why; the next term records it
	lostAt  time.Time
	lostErr error
}

// stand campaigns, and leads each term won, until the run is over.
func (c *candidate) stand(ctx context.Context) error {
	// a standby stops campaigning when the run is over
	cctx, stopCampaign := context.WithCancel(ctx)
	defer stopCampaign()
	finished := make(chan struct{})
	go func() {
		if job.WaitDone(cctx, c.sess.Client, c.cfg.Run) {
			close(finished)
			stopCampaign()
		}
	}()
	go func() {
		// a standby told to stop stops campaigning; a leader checkpoints
		// first (preempt.go), its campaign is over
		select {
		case <-c.cfg.Drain:
			if !c.leading.Load() {
				stopCampaign()
			}
		case <-cctx.Done():
		}
	}()
	for {
		term, err := c.elect.Campaign(cctx)
		if c.cfg.Draining() && !c.leading.Load() {
			if term != nil {
				_ = term.Resign(context.WithoutCancel(ctx))
			}
			c.log.Info("preemption notice: leaving as a standby")
			return job.ErrPreempted
		}
		if isClosed(finished) || (err == nil && c.runDone(ctx)) {
			c.log.Info("the run is over")
			if term != nil {
				_ = term.Resign(context.WithoutCancel(ctx))
			}
			return nil
		}
		if err != nil {
			return err
		}
		if err := c.lead(ctx, term); err == nil || ctx.Err() != nil || !errors.Is(err, errLostLeadership) {
			return err
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// runDone reports whether the run's status says it is over.
func (c *candidate) runDone(ctx context.Context) bool {
	var status RunStatus
	_, err := cluster.GetJSON(ctx, c.sess.Client, c.sess.Keys.Status(), &status)
	return err == nil && status.State == "done"
}

// lead leads the run for one term: to its end (then it records the run's
// end and resigns), or until the term is lost (errLostLeadership, with the
// listener open again for the next term).
func (c *candidate) lead(ctx context.Context, term *cluster.Term) error {
	c.log.Info("leading the run", "run", c.cfg.Run, "lr", c.sess.Spec.LRSummary())
	// each term has its own metrics registry (its gauges start afresh)
	reg := prometheus.NewRegistry()
	c.sess.ServeMetrics(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	l := &leader{cfg: c.cfg, spec: c.sess.Spec, log: c.log, cli: c.sess.Client, mem: c.sess.Members, term: term, lost: term.Done(), reg: reg,
		board: newBoard(), decided: make(chan int64, 16), lostAt: c.lostAt, lostErr: c.lostErr}
	c.lostAt, c.lostErr = time.Time{}, nil
	l.preempts = &preemptions{changed: l.board.broadcast}
	c.leading.Store(true)
	err := l.run(ctx, c.lis)
	c.leading.Store(false)
	if err == nil {
		return c.recordEnd(ctx, term)
	}
	if errors.Is(err, errPreempted) {
		// the checkpoint is published: the standby goes on from it now,
		// not after the election lease runs out
		_ = term.Resign(context.WithoutCancel(ctx))
		c.log.Info("preemption notice: checkpointed and resigned")
		return job.ErrPreempted
	}
	if ctx.Err() != nil || !errors.Is(err, errLostLeadership) {
		return err
	}
	// etcd was out of reach longer than the election lease (or another
	// node took over): stand again; a new term goes on from the last
	// checkpoint. The gRPC server closed the listener: open it again on
	// the address the membership record publishes.
	c.log.Warn("lost leadership; standing for election again", "err", err)
	c.lostAt, c.lostErr = time.Now(), err
	lis, lerr := net.Listen("tcp", c.lis.Addr().String())
	if lerr != nil {
		return fmt.Errorf("coordinator listener: %w", lerr)
	}
	c.lis = lis
	return err
}

// recordEnd writes the run's status "done" (under the leader guard) and
// resigns.
func (c *candidate) recordEnd(ctx context.Context, term *cluster.Term) error {
	st, _ := json.Marshal(RunStatus{State: "done", Model: filepath.Join(c.sess.Spec.Out, "model.tailor"), Finished: time.Now().UTC()})
	if _, err := cluster.Create(ctx, c.sess.Client, c.sess.Keys.Status(), st, term.Guard()); err != nil && !errors.Is(err, cluster.ErrConflict) {
		return fmt.Errorf("record the run's end: %w", err)
	}
	_ = term.Resign(context.WithoutCancel(ctx))
	return nil
}

// RunStatus is the run's outcome, at Keys.Status.
type RunStatus struct {
	State    string    `json:"state"` // "done"
	Model    string    `json:"model"`
	Finished time.Time `json:"finished"`
}
