package coordinator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/wire"
)

// Addrs keys of the coordinator's membership record.
const (
	AddrGRPC = "grpc"
)

// Config is one coordinator process (the leader or a standby).
type Config struct {
	Run         string
	ID          string
	Etcd        []string
	Listen      string // gRPC address; default a free loopback port
	MetricsAddr string // /metrics address; empty: none
	GossipBind  string
	Advertise   string // host peers dial this process at (see job.JoinConfig)
	SecretKey   []byte
	// TLS, if set, is mutual TLS on the gRPC server (workers' work
	// requests, parameter servers' step reports) and on the connections
	// to the parameter servers (certs.Config); nil is plaintext.
	TLS *tls.Config
	// EtcdAuth is the etcd client's TLS and credentials.
	EtcdAuth cluster.EtcdAuth
	Log      *slog.Logger
	// ProgressInterval is how often the leader publishes its progress for
	// tailor status; 0 means ProgressInterval (the constant).
	ProgressInterval time.Duration
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Run == "" || c.ID == "" || len(c.Etcd) == 0 {
		return errors.New("coordinator needs a run id, its own id and etcd endpoints")
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
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("coordinator listener: %w", err)
	}
	defer lis.Close()
	sess, err := job.Join(ctx, job.JoinConfig{Run: cfg.Run, Etcd: cfg.Etcd, Advertise: cfg.Advertise, MetricsAddr: cfg.MetricsAddr, GossipBind: cfg.GossipBind,
		SecretKey: cfg.SecretKey, EtcdAuth: cfg.EtcdAuth, Log: log,
		Self: cluster.Member{ID: cfg.ID, Role: cluster.RoleCoordinator, Addrs: map[string]string{AddrGRPC: lis.Addr().String()}}})
	if err != nil {
		return err
	}
	defer sess.Close(ctx)
	// a standby serves an empty registry until it leads
	sess.ServeMetrics(promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{}))
	spec, mem, cli, keys := sess.Spec, sess.Members, sess.Client, sess.Keys
	elect, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys, Self: mem.Self()})
	if err != nil {
		return err
	}
	log.Info("standing for election", "run", cfg.Run, "id", cfg.ID)
	// a standby stops campaigning when the run is over
	cctx, stopCampaign := context.WithCancel(ctx)
	defer stopCampaign()
	finished := make(chan struct{})
	go func() {
		if job.WaitDone(cctx, cli, cfg.Run) {
			close(finished)
			stopCampaign()
		}
	}()
	var term *cluster.Term
	for {
		term, err = elect.Campaign(cctx)
		select {
		case <-finished:
			log.Info("the run is over")
			if term != nil {
				_ = term.Resign(context.WithoutCancel(ctx))
			}
			return nil
		default:
		}
		if err != nil {
			return err
		}
		var status RunStatus
		if _, err := cluster.GetJSON(ctx, cli, keys.Status(), &status); err == nil && status.State == "done" {
			log.Info("the run is over")
			_ = term.Resign(context.WithoutCancel(ctx))
			return nil
		}
		log.Info("leading the run", "run", cfg.Run)
		// each term has its own metrics registry (its gauges start afresh)
		reg := prometheus.NewRegistry()
		sess.ServeMetrics(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		l := &leader{cfg: cfg, spec: spec, log: log, cli: cli, mem: mem, term: term, reg: reg,
			board: newBoard(), decided: make(chan int64, 16)}
		err = l.run(ctx, lis)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !errors.Is(err, errLostLeadership) {
			return err
		}
		// etcd was out of reach longer than the election lease (or another
		// node took over): stand again; a new term goes on from the last
		// checkpoint. The gRPC server closed the listener: open it again
		// on the address the membership record publishes.
		log.Warn("lost leadership; standing for election again", "err", err)
		if lis, err = net.Listen("tcp", lis.Addr().String()); err != nil {
			return fmt.Errorf("coordinator listener: %w", err)
		}
		defer lis.Close()
	}
	st, _ := json.Marshal(RunStatus{State: "done", Model: filepath.Join(spec.Out, "model.tailor"), Finished: time.Now().UTC()})
	if _, err := cluster.Create(ctx, cli, keys.Status(), st, term.Guard()); err != nil && !errors.Is(err, cluster.ErrConflict) {
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

// psLost starts a rollback, once per attempt, if m is one of the servers
// the attempt works with (not an earlier incarnation's late news).
func (l *leader) psLost(m cluster.Member) {
	if a := l.att.Load(); a != nil && a.serves(m.Addrs[AddrGRPC]) {
		a.startRollback("parameter server "+m.ID+" lost", func() {
			l.log.Warn("parameter server lost", "ps", m.ID, "addr", m.Addrs[AddrGRPC])
		})
	}
}

// epoch runs steps until every record of the epoch is consumed; it returns
// the next step number.
func (l *leader) epoch(ctx context.Context, a *attempt) (int64, error) {
	l.setPhase(phaseTraining)
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		select {
		case <-l.term.Done():
			return 0, errLostLeadership
		case <-a.rollback:
			return 0, errRollback
		default:
		}
		live := l.liveWorkers()
		b := l.board
		b.mu.Lock()
		if b.sched.Done() {
			step := b.sched.Step()
			b.mu.Unlock()
			return step, nil
		}
		if len(live) == 0 {
			b.mu.Unlock()
			time.Sleep(200 * time.Millisecond)
			continue
		}
		res, err := b.sched.Begin(live)
		if err != nil {
			b.mu.Unlock()
			return 0, err
		}
		step := b.sched.Step()
		if len(res) == 0 {
			// records are left, but held by workers that are not live: wait
			// for the membership to drop them
			b.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ids := make([]string, len(res))
		for i, bt := range res {
			ids[i] = bt.Worker
		}
		if err := l.steps.SetParticipants(step, ids); err != nil {
			b.mu.Unlock()
			return 0, err
		}
		b.broadcastLocked()
		b.mu.Unlock()
		l.stepsGauge.Set(float64(step))
		if err := l.waitDecided(ctx, a, step); err != nil {
			return 0, err
		}
		if k := int64(l.spec.CheckpointEvery); k > 0 && (step+1)%k == 0 {
			l.setPhase(phaseCheckpoint)
			err := l.stepCheckpoint(ctx)
			l.setPhase(phaseTraining)
			if err != nil {
				return 0, err
			}
		}
	}
}

// stepCheckpoint checkpoints a sync run between two steps.
func (l *leader) stepCheckpoint(ctx context.Context) error {
	b := l.board
	b.mu.Lock()
	if b.sched.Done() {
		b.mu.Unlock()
		return nil // the epoch's end checkpoints after validation
	}
	st, err := b.sched.Export()
	rs := b.runStateLocked(&st)
	rs.Step = b.sched.Step()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return l.saveOrWarn(ctx, rs.Step, rs, rs.Epoch, "steps", false)
}

// asyncCheckpoint checkpoints an async or SSP run at a cut: no batch is
// out, so no gradient is in flight and every server saves its part as it
// is (version -1), as at an epoch's end; the run state holds the
// scheduler's position, so a resume goes on mid-epoch. Then batches are
// handed out again.
func (l *leader) asyncCheckpoint(ctx context.Context) error {
	b := l.board
	b.mu.Lock()
	st, err := b.asched.Export()
	rs := b.runStateLocked(&st)
	rs.AsyncSteps = st.Steps
	b.mu.Unlock()
	if err == nil {
		err = l.saveOrWarn(ctx, -1, rs, rs.Epoch, "steps", false)
	}
	b.mu.Lock()
	if b.asched != nil {
		b.asched.Resume()
	}
	b.broadcastLocked()
	b.mu.Unlock()
	return err
}

// dropAbsentLocked releases the units of the checkpoint's workers that are
// not live now (resumed with fewer or other workers).
func (l *leader) dropAbsentLocked(st *SchedState) {
	live := map[string]bool{}
	for _, w := range l.liveWorkers() {
		live[w] = true
	}
	owners := map[string]bool{}
	for _, u := range st.Ledger.State {
		if u.Owner != "" {
			owners[u.Owner] = true
		}
	}
	for w := range st.Pos {
		owners[w] = true
	}
	for w := range owners {
		if live[w] {
			continue
		}
		l.log.Info("resumed without a worker of the checkpoint: its units go back to the pool", "worker", w)
		l.board.dropLocked(w)
	}
}

// asyncEpoch waits until the Next calls have consumed every record of the
// epoch, checkpointing at every cut (spec.CheckpointEvery batches); it
// returns the workers' step counters.
func (l *leader) asyncEpoch(ctx context.Context, a *attempt) (map[string]int64, error) {
	l.setPhase(phaseTraining)
	b := l.board
	for {
		b.mu.Lock()
		if b.asched.Done() {
			steps := b.asched.Steps()
			b.asched = nil // workers wait while the epoch is judged
			b.mu.Unlock()
			return steps, nil
		}
		if b.asched.AtCut() {
			b.mu.Unlock()
			l.setPhase(phaseCheckpoint)
			err := l.asyncCheckpoint(ctx)
			l.setPhase(phaseTraining)
			if err != nil {
				return nil, err
			}
			continue
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.term.Done():
			return nil, errLostLeadership
		case <-a.rollback:
			return nil, errRollback
		case <-wake:
		}
	}
}

// waitDecided waits for commit to record the decision of step.
func (l *leader) waitDecided(ctx context.Context, a *attempt, step int64) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.term.Done():
			return errLostLeadership
		case <-a.rollback:
			return errRollback
		case s := <-l.decided:
			if s == step {
				return nil
			}
		}
	}
}

// liveWorkers returns the live workers in rank order, less the benched.
func (l *leader) liveWorkers() []string {
	var ids []string
	l.benchMu.Lock()
	defer l.benchMu.Unlock()
	for _, m := range l.mem.Members(cluster.RoleWorker) {
		if !l.benched[m.ID] {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// bench takes workers that missed a step's synchronised BatchNorm out of
// the step and of the next ones, as if they had died, until they ask for
// work again: a member that does not compute must not hold every step.
func (l *leader) bench(step int64, missing []string) {
	for _, w := range missing {
		l.log.Warn("worker left out of a step: no work for it until it asks", "worker", w, "step", step)
	}
	l.benchWorkers(missing)
}

// benchWorkers benches ids and drops them from the open and later steps
// and from the schedule (dropWorker): their reservations and units go back
// to the pool.
func (l *leader) benchWorkers(ids []string) {
	l.benchMu.Lock()
	if l.benched == nil {
		l.benched = map[string]bool{}
	}
	for _, w := range ids {
		l.benched[w] = true
	}
	l.benchMu.Unlock()
	for _, w := range ids {
		l.dropWorker(w)
	}
}

// unbench lets a benched worker work again: it asks for work.
func (l *leader) unbench(id string) {
	l.benchMu.Lock()
	delete(l.benched, id)
	l.benchMu.Unlock()
}

// dropWorker takes a worker out of the open and later steps and out of the
// schedule: its reservation and units go back to the pool.
func (l *leader) dropWorker(id string) {
	l.steps.Drop(id)
	l.bn.Reevaluate() // its BatchNorm exchanges go on without it
	b := l.board
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropLocked(id)
	b.broadcastLocked()
}

// commit records a sync-step decision: the included workers' batches are
// consumed. (Persisting the ledger in etcd, for resume, is the
// checkpoint issue's work.)
func (l *leader) commit(ctx context.Context, d wire.Decision) (wire.Decision, error) {
	b := l.board
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sched == nil {
		// the attempt ended (a rollback) while the step was being decided
		return d, fmt.Errorf("step %d: no sync epoch running", d.Step)
	}
	done, err := b.sched.Decide(d.Step, d.Included)
	if err != nil {
		return d, err
	}
	for _, bt := range done {
		b.consumedLocked(bt)
	}
	if len(done) > 0 {
		l.progressed(d.Step) // an empty step (every gradient missing somewhere) is none
	}
	l.imagesCounter.Add(float64(len(done)))
	l.bn.Finished(d.Step)
	b.broadcastLocked()
	select {
	case l.decided <- d.Step:
	default:
	}
	return d, nil
}

// watch drops workers the membership declares dead or gone.
func (l *leader) watch(events <-chan cluster.Event) {
	for ev := range events {
		if ev.Member.Role == cluster.RoleParamServer {
			// a rollback is costly: only the lease's expiry (or a leave)
			// counts, not gossip's first suspicion, which load can raise
			switch ev.Kind {
			case cluster.EventGone, cluster.EventLeft:
				l.psLost(ev.Member)
			}
			continue
		}
		if ev.Member.Role != cluster.RoleWorker {
			continue
		}
		switch ev.Kind {
		case cluster.EventFailed, cluster.EventGone, cluster.EventLeft:
			l.log.Info("worker lost", "worker", ev.Member.ID, "event", ev.Kind)
			l.dropWorker(ev.Member.ID)
		}
	}
}
