package paramserver

import (
	"context"
	"errors"
	"fmt"
	"github.com/tailorml/tailor/internal/job"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/optim"
)

// This file holds the Server: its state, New, serving and closing,
// following the membership, and the small handlers (Status, Idle). A push
// is received in push.go and applied by the rules in update.go; pulls are
// in pull.go, snapshots in snapshot.go, the sync-step decider in decider.go.

// Sentinel errors.
var (
	// ErrConfig means a Config is not valid.
	ErrConfig = errors.New("paramserver: bad config")
	// ErrClosed means the server has been closed.
	ErrClosed = errors.New("paramserver: server closed")
	// ErrNotInitialised means the server holds no weights yet.
	ErrNotInitialised = errors.New("paramserver: no weights yet")
	// ErrVersionPassed means SnapshotAt asked for a version the server has
	// already gone past.
	ErrVersionPassed = errors.New("paramserver: version already passed")
	// ErrMismatch means weights or a snapshot do not fit the server's plan.
	ErrMismatch = errors.New("paramserver: does not match the plan")
)

var _ wire.Handler = (*Server)(nil)

// Server is one parameter server: it holds its parts of the model (see
// wire.Plan), applies the update rule, and answers the wire protocol.
type Server struct {
	cfg     Config
	plan    *wire.Plan
	parts   []wire.Part // this server's
	size    int         // floats held
	members Membership
	log     *slog.Logger
	m       *metrics
	bufs    bufPool
	snaps   snapPool

	done      chan struct{}
	closeOnce sync.Once
	watchDone chan struct{}

	mu          sync.Mutex
	closed      bool
	initialised bool
	version     int64
	weights     []float32
	adam        *optim.Adam
	pviews      [][]float32 // Param parts of weights, for the optimizer
	gviews      [][]float32 // scratch: Param parts of a gradient
	avg         []float32   // sync: the averaged gradient
	member      map[string]bool
	verCh       chan struct{} // closed at every version change
	pub         *snapshot     // the weights pulls read; nil when stale

	// sync
	pending   map[string][]float32
	expected  map[string]bool // members when the step's first gradient arrived
	stepStart time.Time
	timer     *time.Timer

	// sync with a Decider
	decideKick chan struct{}               // cap 1: the complete set or the membership changed
	decideDone chan struct{}               // closed when the decide loop has ended
	waits      map[string]chan pushOutcome // worker → its held push, waiting for the decision
	failed     error                       // ErrDecision: sync stopped
	recent     []wire.Decision             // the last decisions applied, oldest first

	// async and SSP
	clocks  map[string]int64 // worker → the step it is on (last accepted + 1)
	clockCh chan struct{}    // closed at every clock or membership change
	held    int
	idle    map[string]bool // SSP: workers without a batch, not counted as slowest

	waiters []snapWaiter

	skipUpdate bool // benchmarks of the wire alone: accept, but do not run the optimizer
}

// New makes a server for cfg whose active workers come from members. It
// holds no weights until Init, SetWeights or Restore. Close it when done.
func New(cfg Config, members Membership) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if members == nil {
		return nil, fmt.Errorf("%w: no membership", ErrConfig)
	}
	plan, err := wire.NewPlan(cfg.Spec, cfg.Servers)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:        cfg,
		plan:       plan,
		parts:      plan.ServerParts(cfg.Index),
		size:       plan.ServerLen(cfg.Index),
		members:    members,
		log:        log.With("run", cfg.RunID, "ps", cfg.Index),
		m:          newMetrics(&cfg),
		done:       make(chan struct{}),
		watchDone:  make(chan struct{}),
		verCh:      make(chan struct{}),
		clockCh:    make(chan struct{}),
		pending:    map[string][]float32{},
		clocks:     map[string]int64{},
		idle:       map[string]bool{},
		decideDone: make(chan struct{}),
	}
	s.bufs.size = s.size
	s.snaps.size = s.size
	s.weights = make([]float32, s.size)
	for _, p := range s.parts {
		if p.Kind == wire.Param {
			s.pviews = append(s.pviews, s.weights[p.Flat:p.Flat+p.Len])
		}
	}
	s.gviews = make([][]float32, len(s.pviews))
	if err := s.resetOptimizerLocked(); err != nil {
		return nil, err
	}
	if s.decided() {
		s.decideKick = make(chan struct{}, 1)
		s.waits = map[string]chan pushOutcome{}
	}
	ids, changed := members.Members()
	s.setMembersLocked(ids)
	go s.watch(changed)
	if s.decided() {
		go s.decideLoop()
	} else {
		close(s.decideDone)
	}
	return s, nil
}

// resetOptimizerLocked makes a fresh optimizer for this server's Param
// parts (pviews' order), each a kernel if its tensor is one in the spec.
func (s *Server) resetOptimizerLocked() error {
	var ts []optim.Tensor
	for _, p := range s.parts {
		if p.Kind == wire.Param {
			ts = append(ts, optim.Tensor{Size: p.Len, Kernel: s.plan.Spec[p.Tensor].Kernel})
		}
	}
	a, err := optim.NewAdamFor(s.cfg.Adam, ts)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s.adam = a
	return nil
}

// decided reports whether sync steps are decided by cfg.Decider.
func (s *Server) decided() bool { return s.cfg.Mode == job.ModeSync && s.cfg.Decider != nil }

// Plan is the partition plan; Parts returns this server's parts.
func (s *Server) Plan() *wire.Plan { return s.plan }

// Parts are the parts this server holds, in order.
func (s *Server) Parts() []wire.Part { return s.parts }

// Version is the current weights version (-1 before any weights).
func (s *Server) Version() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.initialised {
		return -1
	}
	return s.version
}

// Serve answers the wire protocol on lis until ctx is done or the server
// is closed, then stops the gRPC server (pending calls get a short grace).
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	g := grpc.NewServer(wire.ServerOptions(s.cfg.TLS, s.cfg.RunID)...)
	wire.Register(g, s)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	case <-s.done:
	}
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		g.Stop()
	}
	<-errc
	return nil
}

// ListenAndServe listens on cfg.ListenAddr and serves until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("paramserver: %w", err)
	}
	s.log.Info("parameter server listening", "addr", lis.Addr().String(), "mode", s.cfg.Mode,
		"servers", s.cfg.Servers, "parts", len(s.parts), "floats", s.size)
	return s.Serve(ctx, lis)
}

// Close stops the membership watcher, fails every waiting call and timer,
// and makes later calls fail with ErrClosed or ReasonClosed.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.mu.Lock()
		s.closed = true
		if s.timer != nil {
			s.timer.Stop()
		}
		s.signalLocked()
		for _, w := range s.waiters {
			w.ch <- snapResult{err: ErrClosed}
		}
		s.waiters = nil
		s.answerWaitsLocked(pushOutcome{version: s.version, reason: wire.ReasonClosed})
		s.mu.Unlock()
		<-s.watchDone
		<-s.decideDone
	})
	return nil
}

func (s *Server) watch(changed <-chan struct{}) {
	defer close(s.watchDone)
	for {
		select {
		case <-changed:
		case <-s.done:
			return
		}
		var ids []string
		ids, changed = s.members.Members()
		s.mu.Lock()
		s.setMembersLocked(ids)
		s.mu.Unlock()
	}
}

func (s *Server) setMembersLocked(ids []string) {
	s.member = make(map[string]bool, len(ids))
	for _, id := range ids {
		s.member[id] = true
	}
	s.m.members.Store(int64(len(s.member)))
	s.bufs.setMax(len(s.member) + 2)
	s.log.Debug("membership", "workers", len(ids))
	switch {
	case s.decided():
		s.kickDecider()
	case s.cfg.Mode == job.ModeSync:
		s.maybeCompleteLocked()
	}
	s.signalClocksLocked()
}

// signalLocked wakes everything waiting for a version or a clock.
func (s *Server) signalLocked() {
	close(s.verCh)
	s.verCh = make(chan struct{})
	s.signalClocksLocked()
}

func (s *Server) signalClocksLocked() {
	close(s.clockCh)
	s.clockCh = make(chan struct{})
}

// weightsChangedLocked is called after every change of weights or version.
func (s *Server) weightsChangedLocked() {
	if s.pub != nil {
		s.pub.unref()
		s.pub = nil
	}
	s.m.version.Store(s.version)
	s.signalLocked()
	s.serveWaitersLocked()
}

// ---- Status ----

// Status implements wire.Handler.
func (s *Server) Status(ctx context.Context, req *wire.StatusRequest) (*wire.StatusReply, error) {
	if req.RunID != s.cfg.RunID {
		return nil, wire.RejectStatus(wire.ReasonRunID, fmt.Sprintf("run %q", req.RunID))
	}
	s.mu.Lock()
	r := &wire.StatusReply{
		RunID: s.cfg.RunID, WorkerID: req.WorkerID, Server: s.cfg.Index, Mode: string(s.cfg.Mode),
		Initialised: s.initialised, Version: s.version, Step: s.version, Members: len(s.member),
	}
	if s.cfg.Mode == job.ModeSync {
		r.Pending = len(s.pending)
	} else {
		r.Pending = s.held
		if c, ok := s.slowestLocked(""); ok {
			r.Step = c
		}
	}
	s.mu.Unlock()
	r.BytesIn, r.BytesOut = s.m.bytesIn.Load(), s.m.bytesOut.Load()
	r.Accepted, r.Steps, r.Missing = s.m.accepted.Load(), s.m.steps.Load(), s.m.missing.Load()
	r.Rejected = s.m.rejectedCounts(s.m.rejected)
	return r, nil
}

// ---- Idle ----

// Idle implements wire.Handler: in SSP mode the worker stops counting as
// the slowest until its next push, and held pushes are re-examined. A
// worker without a batch (the end of an epoch, or a wait for the
// coordinator) would otherwise hold every other worker back for good.
// Other modes accept it and change nothing.
func (s *Server) Idle(ctx context.Context, req *wire.IdleRequest) (*wire.PushReply, error) {
	if req.RunID != s.cfg.RunID {
		s.m.reject(wire.ReasonRunID)
		return nil, wire.RejectStatus(wire.ReasonRunID, fmt.Sprintf("run %q", req.RunID))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.member[req.WorkerID] {
		s.m.reject(wire.ReasonUnknownWorker)
		return nil, wire.RejectStatus(wire.ReasonUnknownWorker, fmt.Sprintf("worker %q", req.WorkerID))
	}
	if s.cfg.Mode == job.ModeSSP && !s.idle[req.WorkerID] {
		s.idle[req.WorkerID] = true
		s.signalClocksLocked()
		s.log.Debug("worker idle", "worker", req.WorkerID, "step", req.Step)
	}
	return &wire.PushReply{RunID: s.cfg.RunID, WorkerID: req.WorkerID, Server: s.cfg.Index, Step: req.Step, Version: s.version, Accepted: true}, nil
}
