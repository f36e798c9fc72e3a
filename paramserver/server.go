package paramserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/optim"
)

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

func (s *Server) resetOptimizerLocked() error {
	sizes := make([]int, len(s.pviews))
	for i, v := range s.pviews {
		sizes[i] = len(v)
	}
	a, err := optim.NewAdam(s.cfg.Adam, sizes)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s.adam = a
	return nil
}

// decided reports whether sync steps are decided by cfg.Decider.
func (s *Server) decided() bool { return s.cfg.Mode == Sync && s.cfg.Decider != nil }

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
	g := grpc.NewServer(wire.ServerOptions(s.cfg.TLS)...)
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
	case s.cfg.Mode == Sync:
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

// ---- Push and Init ----

// Push implements wire.Handler.
func (s *Server) Push(st grpc.ServerStream) error { return s.receive(st, false) }

// Init implements wire.Handler.
func (s *Server) Init(st grpc.ServerStream) error { return s.receive(st, true) }

// pushHeader is what a push's first chunk says about the whole push.
type pushHeader struct {
	runID, worker  string
	step, base     int64
	plan           uint64
	typ            wire.MsgType
	server, chunks int
}

// receive reads a push (or init) into a pooled buffer, validating as it
// goes: the first chunk's header, then that every chunk continues exactly
// where the last one ended, then the payload's values. Only a complete,
// valid push reaches accept.
func (s *Server) receive(st grpc.ServerStream, init bool) error {
	var (
		h              pushHeader
		buf            []float32
		kept           bool
		cur, off       int
		reason, detail string
	)
	defer func() {
		if buf != nil && !kept {
			s.bufs.put(buf)
		}
	}()
	// A refused chunk is read into scratch and the refusal answered after
	// RecvMsg returns: an error from Dst would end the stream with a bare
	// gRPC status instead of a PushReply.
	var scratch []byte
	discard := func(n int) ([]byte, error) {
		if cap(scratch) < n {
			scratch = make([]byte, n)
		}
		return scratch[:n], nil
	}
	ch := &wire.Chunk{CheckFinite: true} // float32 payloads are checked as they are copied
	ch.Dst = func(c *wire.Chunk, n int) ([]byte, error) {
		if h.chunks == 0 {
			h = pushHeader{runID: c.RunID, worker: c.WorkerID, step: c.Step, base: c.Version, plan: c.Plan, typ: c.Type, server: c.Server}
			h.chunks++
			if reason, detail = s.checkHeader(&h, init); reason != "" {
				return discard(n)
			}
			buf = s.bufs.get()
		} else if h.chunks++; c.Type != h.typ || c.RunID != h.runID || c.WorkerID != h.worker || c.Step != h.step || c.Version != h.base || c.Plan != h.plan || c.Server != h.server {
			reason, detail = wire.ReasonShape, "header changed within a push"
			return discard(n)
		}
		floats := n / 4
		if c.Encoding != wire.EncodingFloat32 {
			floats = c.Count
		}
		if cur >= len(s.parts) || c.Part != s.parts[cur].ID || c.Offset != off || floats == 0 || floats > s.parts[cur].Len-off {
			reason = wire.ReasonShape
			detail = fmt.Sprintf("chunk of part %d at offset %d with %d floats; want part %d at offset %d", c.Part, c.Offset, floats, s.partID(cur), off)
			return discard(n)
		}
		p := s.parts[cur]
		if want := s.encodingOf(p, init); c.Encoding != want {
			reason = wire.ReasonEncoding
			detail = fmt.Sprintf("part %d (%s) encoded as %s; the run's is %s", c.Part, p.Name, c.Encoding, want)
			return discard(n)
		}
		if c.Encoding != wire.EncodingFloat32 {
			return discard(n) // decoded into buf once received
		}
		return wire.Bytes(buf[p.Flat+off : p.Flat+off+n/4]), nil
	}
	for {
		err := st.RecvMsg(ch)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The stream is over (gRPC has sent the client a status): count
			// and log, no reply is possible.
			reason = wire.ReasonCanceled // the client went away
			if c := status.Code(err); c == codes.Internal || c == codes.ResourceExhausted {
				reason = wire.ReasonCorrupt // undecodable, bad checksum, too big
			}
			s.m.reject(reason)
			s.log.Warn("push failed", "worker", h.worker, "step", h.step, "reason", reason, "err", err)
			return err
		}
		s.m.bytesIn.Add(uint64(len(ch.Payload)))
		if reason == reasonIncluded {
			return s.replayIncluded(st, &h)
		}
		if reason != "" {
			return s.refuse(st, &h, reason, detail)
		}
		got := buf[s.parts[cur].Flat+off : s.parts[cur].Flat+off+ch.Len()]
		if ch.Encoding != wire.EncodingFloat32 {
			if err := ch.Decode(got); err != nil {
				return s.refuse(st, &h, wire.ReasonCorrupt, fmt.Sprintf("part %d (%s): %v", ch.Part, s.parts[cur].Name, err))
			}
		}
		if ch.NonFinite || ch.Encoding != wire.EncodingFloat32 && !wire.Finite(got) {
			return s.refuse(st, &h, wire.ReasonNonFinite, fmt.Sprintf("part %d (%s)", ch.Part, s.parts[cur].Name))
		}
		if off += ch.Len(); off == s.parts[cur].Len {
			cur, off = cur+1, 0
		}
	}
	if h.chunks == 0 || cur != len(s.parts) {
		return s.refuse(st, &h, wire.ReasonShape, fmt.Sprintf("push ended after %d of %d parts", cur, len(s.parts)))
	}
	var version int64
	if init {
		version, reason, detail = s.applyInit(buf)
	} else {
		var wait <-chan pushOutcome
		version, reason, detail, kept, wait = s.accept(st.Context(), &h, buf)
		if wait != nil {
			// Sync with a Decider: answer once the step is decided, saying
			// whether this gradient made it.
			select {
			case o := <-wait:
				version, reason, detail = o.version, o.reason, o.detail
			case <-st.Context().Done():
				// The worker went away; its gradient stays held for the
				// decision, which may still include it.
				s.log.Debug("worker left while its push waited for the decision", "worker", h.worker, "step", h.step)
				return st.Context().Err()
			}
		}
	}
	if reason == reasonIncluded {
		return s.replayIncluded(st, &h)
	}
	if reason != "" {
		return s.refuse(st, &h, reason, detail)
	}
	s.m.accepted.Add(1)
	return st.SendMsg(&wire.PushReply{RunID: s.cfg.RunID, WorkerID: h.worker, Server: s.cfg.Index, Step: h.step, Version: version, Accepted: true})
}

// encodingOf is the encoding a push (or Init) must use for part p: the
// run's for Param gradients, float32 for State values and initial weights.
func (s *Server) encodingOf(p wire.Part, init bool) wire.Encoding {
	if init || p.Kind != wire.Param {
		return wire.EncodingFloat32
	}
	return s.cfg.Encoding
}

func (s *Server) partID(i int) int {
	if i < len(s.parts) {
		return s.parts[i].ID
	}
	return -1
}

// refuse counts, logs and answers a refused push. The weights are untouched.
func (s *Server) refuse(st grpc.ServerStream, h *pushHeader, reason, detail string) error {
	s.m.reject(reason)
	s.log.Warn("push rejected", "worker", h.worker, "step", h.step, "reason", reason, "detail", detail)
	s.mu.Lock()
	v := s.version
	s.mu.Unlock()
	return st.SendMsg(&wire.PushReply{RunID: s.cfg.RunID, WorkerID: h.worker, Server: s.cfg.Index, Step: h.step, Version: v, Reason: reason})
}

// checkHeader checks a push's first chunk, before its payload is read.
func (s *Server) checkHeader(h *pushHeader, init bool) (reason, detail string) {
	switch {
	case h.typ != wire.TypePushChunk:
		return wire.ReasonShape, fmt.Sprintf("message type %d in a push", h.typ)
	case h.runID != s.cfg.RunID:
		return wire.ReasonRunID, fmt.Sprintf("run %q", h.runID)
	case h.plan != s.plan.Fingerprint() || h.server != s.cfg.Index:
		return wire.ReasonPlan, fmt.Sprintf("plan %016x for server %d; this is server %d of plan %016x", h.plan, h.server, s.cfg.Index, s.plan.Fingerprint())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if init {
		switch {
		case s.closed:
			return wire.ReasonClosed, ""
		case s.initialised:
			return wire.ReasonInitialised, ""
		}
		return "", ""
	}
	return s.checkPushLocked(h)
}

// checkPushLocked checks a push against the server's state; it runs on
// the first chunk and again when the push is complete.
func (s *Server) checkPushLocked(h *pushHeader) (reason, detail string) {
	switch {
	case s.closed:
		return wire.ReasonClosed, ""
	case !s.initialised:
		return wire.ReasonUninitialised, ""
	case !s.member[h.worker]:
		return wire.ReasonUnknownWorker, fmt.Sprintf("worker %q", h.worker)
	case s.failed != nil:
		return wire.ReasonInconsistent, s.failed.Error()
	}
	if s.cfg.Mode == Sync {
		switch {
		case h.step < s.version:
			if reason, detail = s.replayLocked(h); reason != "" {
				return reason, detail
			}
			return wire.ReasonStale, fmt.Sprintf("step %d, collecting %d", h.step, s.version)
		case h.step > s.version:
			return wire.ReasonFuture, fmt.Sprintf("step %d, collecting %d", h.step, s.version)
		case s.pending[h.worker] != nil:
			return wire.ReasonDuplicate, fmt.Sprintf("step %d", h.step)
		}
		return "", ""
	}
	switch c, ok := s.clocks[h.worker]; {
	case h.base > s.version:
		return wire.ReasonFuture, fmt.Sprintf("base version %d, at %d", h.base, s.version)
	case h.base < 0 || h.step < 0:
		return wire.ReasonShape, fmt.Sprintf("step %d, base version %d", h.step, h.base)
	case ok && h.step < c:
		return wire.ReasonDuplicate, fmt.Sprintf("step %d, worker is on %d", h.step, c)
	}
	return "", ""
}

// accept applies a complete, valid push according to the mode. kept
// reports whether the server kept buf (sync: until the step is applied).
// With a Decider, wait delivers the push's outcome once the step is
// decided.
func (s *Server) accept(ctx context.Context, h *pushHeader, buf []float32) (version int64, reason, detail string, kept bool, wait <-chan pushOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reason, detail = s.checkPushLocked(h); reason != "" {
		return s.version, reason, detail, false, nil
	}
	if s.cfg.Mode == Sync {
		if len(s.pending) == 0 {
			s.startStepLocked()
		}
		s.pending[h.worker] = buf
		s.m.pending.Store(int64(len(s.pending)))
		if s.decided() {
			ch := make(chan pushOutcome, 1)
			s.waits[h.worker] = ch
			s.kickDecider()
			return s.version, "", "", true, ch
		}
		s.maybeCompleteLocked()
		return s.version, "", "", true, nil // t, or t+1 if this push completed the step
	}
	if s.cfg.Mode == SSP {
		delete(s.idle, h.worker) // a push makes a worker active again
		if reason, detail = s.holdLocked(ctx, h); reason != "" {
			return s.version, reason, detail, false, nil
		}
	}
	start := time.Now()
	s.m.staleness.Observe(float64(s.version - h.base))
	s.applyLocked(buf)
	s.clocks[h.worker] = h.step + 1
	s.version++
	s.m.steps.Add(1)
	s.m.stepSeconds.Observe(time.Since(start).Seconds())
	s.weightsChangedLocked()
	return s.version, "", "", false, nil
}

// holdLocked waits (unlocking while it waits) until the push of step h.step
// is within the staleness bound of the slowest active worker, re-checking
// the push whenever clocks or membership change.
func (s *Server) holdLocked(ctx context.Context, h *pushHeader) (reason, detail string) {
	for {
		slowest, ok := s.slowestLocked(h.worker)
		if !ok || h.step <= slowest+int64(s.cfg.Staleness) {
			return "", ""
		}
		ch := s.clockCh
		s.held++
		s.m.pending.Store(int64(s.held))
		s.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		case <-s.done:
		}
		s.mu.Lock()
		s.held--
		s.m.pending.Store(int64(s.held))
		if err != nil {
			return wire.ReasonCanceled, err.Error()
		}
		if reason, detail = s.checkPushLocked(h); reason != "" {
			return reason, detail
		}
	}
}

// slowestLocked is the smallest clock among the active workers other than
// self that have pushed at least once and are not idle.
func (s *Server) slowestLocked(self string) (int64, bool) {
	var c int64
	found := false
	for w := range s.member {
		if w == self || s.idle[w] {
			continue
		}
		if v, ok := s.clocks[w]; ok && (!found || v < c) {
			c, found = v, true
		}
	}
	return c, found
}

// applyLocked runs one optimizer step with grad (a flat vector of the
// server's parts) and sets the State parts to grad's values.
func (s *Server) applyLocked(grad []float32) {
	start := time.Now()
	defer func() { s.m.updateSeconds.Observe(time.Since(start).Seconds()) }()
	if s.skipUpdate {
		return
	}
	j := 0
	for _, p := range s.parts {
		g := grad[p.Flat : p.Flat+p.Len]
		if p.Kind == wire.Param {
			s.gviews[j] = g
			j++
		} else {
			copy(s.weights[p.Flat:p.Flat+p.Len], g)
		}
	}
	if err := s.adam.Update(s.pviews, s.gviews); err != nil {
		panic("paramserver: optimizer views out of shape: " + err.Error()) // sizes are fixed at New
	}
	clear(s.gviews)
}

// ---- sync ----

func (s *Server) startStepLocked() {
	s.stepStart = time.Now()
	if s.decided() {
		return // the Decider's deadline, not ours
	}
	s.expected = make(map[string]bool, len(s.member))
	for w := range s.member {
		s.expected[w] = true
	}
	step := s.version
	s.timer = time.AfterFunc(s.cfg.StepDeadline, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed && s.version == step && len(s.pending) > 0 {
			s.completeLocked(endDeadline)
		}
	})
}

// maybeCompleteLocked applies the sync step if every active worker's
// gradient is in (gradients of workers that have since left count), or
// if the quorum is reached.
func (s *Server) maybeCompleteLocked() {
	if len(s.pending) == 0 || s.closed {
		return
	}
	all := true
	for w := range s.member {
		if s.pending[w] == nil {
			all = false
			break
		}
	}
	switch {
	case all:
		s.completeLocked(endAll)
	case s.cfg.SyncQuorum > 0 && len(s.pending) >= s.cfg.SyncQuorum:
		s.completeLocked(endQuorum)
	}
}

// completeLocked averages the pending gradients in worker-id order and
// applies them: version t becomes t+1.
func (s *Server) completeLocked(end string) {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	ids := make([]string, 0, len(s.pending))
	for w := range s.pending {
		ids = append(ids, w)
	}
	slices.Sort(ids)
	missing := 0
	for w := range s.expected {
		if s.pending[w] == nil {
			missing++
		}
	}
	for w := range s.member {
		if s.pending[w] == nil && !s.expected[w] {
			missing++
		}
	}
	if end == endAll && missing > 0 {
		end = endMembership
	}
	s.applyPendingLocked(ids)
	s.m.syncSteps.WithLabelValues(end).Inc()
	if missing > 0 {
		s.m.missing.Add(uint64(missing))
		s.m.missingByEnd.WithLabelValues(end).Add(float64(missing))
		s.log.Warn("sync step applied without some workers", "step", s.version-1, "gradients", len(ids), "missing", missing, "end", end)
	}
	s.weightsChangedLocked()
}

// applyPendingLocked applies the average of the pending gradients of ids
// (a subset of the pending workers; none for an empty step), summed in
// the order of ids, recycles every pending buffer and moves to the next version. The caller counts the
// step's end and calls weightsChangedLocked.
func (s *Server) applyPendingLocked(ids []string) {
	grads := make([][]float32, len(ids))
	for i, w := range ids {
		grads[i] = s.pending[w]
	}
	switch len(grads) {
	case 0:
		// an empty step (a decision that includes nobody): the version
		// moves on, the weights and the optimizer's state stay
	case 1:
		s.applyLocked(grads[0])
	default:
		if s.avg == nil {
			s.avg = make([]float32, s.size)
		}
		average(s.avg, grads)
		s.applyLocked(s.avg)
	}
	for w, b := range s.pending {
		s.bufs.put(b)
		delete(s.pending, w)
	}
	s.expected = nil
	s.m.pending.Store(0)
	s.version++
	s.m.steps.Add(1)
	s.m.stepSeconds.Observe(time.Since(s.stepStart).Seconds())
}

// average sets dst to the mean of srcs: for each float, the float64 sum in
// the order of srcs (worker-id order, or the Decider's), divided by
// len(srcs), rounded to float32. The result depends only on the inputs, not on arrival order.
func average(dst []float32, srcs [][]float32) {
	const block = 2048
	var acc [block]float64
	n := float64(len(srcs))
	for lo := 0; lo < len(dst); lo += block {
		hi := min(lo+block, len(dst))
		a := acc[:hi-lo]
		for j, x := range srcs[0][lo:hi] {
			a[j] = float64(x)
		}
		for _, src := range srcs[1:] {
			for j, x := range src[lo:hi] {
				a[j] += float64(x)
			}
		}
		d := dst[lo:hi]
		for j := range d {
			d[j] = float32(a[j] / n)
		}
	}
}

// ---- init ----

func (s *Server) applyInit(buf []float32) (version int64, reason, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return 0, wire.ReasonClosed, ""
	case s.initialised:
		return s.version, wire.ReasonInitialised, ""
	}
	copy(s.weights, buf)
	s.resetLocked(0)
	s.weightsChangedLocked()
	s.log.Info("initial weights received")
	return 0, "", ""
}

// resetLocked starts afresh at version with the current weights: fresh
// optimizer, no pending gradients, no worker clocks. The caller then calls
// weightsChangedLocked.
func (s *Server) resetLocked(version int64) {
	if err := s.resetOptimizerLocked(); err != nil {
		panic(err) // the config was validated in New
	}
	s.clearPendingLocked()
	s.recent = nil
	s.failed = nil // consistent weights again (Restore of a checkpoint)
	clear(s.clocks)
	clear(s.idle)
	s.initialised = true
	s.version = version
	if s.decided() {
		// a report of the old timeline still in flight is cancelled, so a
		// leader restoring a checkpoint never hears of a step undone
		s.kickDecider()
	}
}

func (s *Server) clearPendingLocked() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	for w, b := range s.pending {
		s.bufs.put(b)
		delete(s.pending, w)
	}
	s.expected = nil
	s.m.pending.Store(0)
	s.answerWaitsLocked(pushOutcome{version: s.version, reason: wire.ReasonStale, detail: "the server was reset; the step's gradients were dropped"})
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
	if s.cfg.Mode == Sync {
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
	if s.cfg.Mode == SSP && !s.idle[req.WorkerID] {
		s.idle[req.WorkerID] = true
		s.signalClocksLocked()
		s.log.Debug("worker idle", "worker", req.WorkerID, "step", req.Step)
	}
	return &wire.PushReply{RunID: s.cfg.RunID, WorkerID: req.WorkerID, Server: s.cfg.Index, Step: req.Step, Version: s.version, Accepted: true}, nil
}

// ---- receive buffers ----

// bufPool recycles push buffers (one flat vector of the server's parts
// each), so steady-state training allocates none.
type bufPool struct {
	mu   sync.Mutex
	size int
	max  int
	free [][]float32
}

func (p *bufPool) get() []float32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b
	}
	return make([]float32, p.size)
}

func (p *bufPool) put(b []float32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < p.max {
		p.free = append(p.free, b)
	}
}

func (p *bufPool) setMax(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.max = n
	if len(p.free) > n {
		clear(p.free[n:])
		p.free = p.free[:n]
	}
}
