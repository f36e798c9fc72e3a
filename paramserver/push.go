package paramserver

import (
	"errors"
	"fmt"
	"github.com/tailorml/tailor/internal/job"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tailorml/tailor/internal/wire"
)

// This file holds the receiving side of Push and Init: reading a push's
// chunks into a buffer, checking its header against the plan, the run and
// the server's state, refusing it with a reason, and the buffer pool.

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
	if s.cfg.Mode == job.ModeSync {
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
