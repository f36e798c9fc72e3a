package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
)

// This file holds the Client's push path: Push, PushGated (sending a
// gradient while it is still being computed), Init, the per-server streams
// of chunks, and the compression state of each server (encoder).

// encoder is one server's compression state: the encoded payloads of a
// push (gRPC may read them until the server's reply is in) and, for
// top-k, the residual (what was not sent, in the server's flat layout,
// Part.Flat) and the residual the current push leaves if accepted.
type encoder struct {
	mu       sync.Mutex // one push per server at a time
	buf      []byte
	residual []float32
	next     []float32
	sel      topKSelector
}

// Push sends one step's tensors, aligned with the spec: gradients for Param
// tensors, current values for State tensors. step is the worker's step (in
// sync mode the step being collected, which equals the version the worker
// pulled); version is the weights version the gradients were computed
// from. Tensors holding NaN or Inf are refused before anything is sent, so
// that no server applies a gradient the others refuse.
//
// Push returns once every server has answered; the result is the smallest
// version the servers reported. A refusal is a *RejectedError (errors.Is
// ErrRejected); with several servers, errors are joined. Servers decide
// independently: if some refuse (say, the membership changed between
// them) the others' parts are still updated. The tensors are read, never
// written, and must not change until Push returns.
//
// In sync mode with a decider (the coordinator decides each step for all
// servers), every server answers once step is decided: nil (at version
// step+1) if the gradient made the step; otherwise ReasonLate from every
// server — the step went without it, redo the batch at step+1 — as
// ReasonStale is for a push that arrives after the step.
func (c *Client) Push(ctx context.Context, step, version int64, tensors [][]float32) (int64, error) {
	sums, err := c.checkPush(streamPush, tensors)
	if err != nil {
		return -1, err
	}
	return c.send(ctx, streamPush, step, version, tensors, nil, sums)
}

// A Gate hands a push its tensors while they are being computed.
type Gate interface {
	// Tensor blocks until tensor t (a spec index) is final, or ctx ends,
	// and returns it. It may be called more than once for a tensor (from
	// the streams of several servers) and from several goroutines.
	Tensor(ctx context.Context, t int) ([]float32, error)
}

// PushGated is Push for a gradient that is still being computed: every
// server's stream sends its parts in plan order, each as soon as gate
// releases its tensor, so that sending overlaps computing (netspec orders
// the spec as a training step finishes the tensors). As Push, it never
// lets a server apply a gradient another refuses for NaN or Inf: each
// stream holds back its last chunk until every tensor has been released
// and found finite, and a non-finite tensor cancels every stream, so that
// no server receives a complete push. The released tensors must not change
// until PushGated returns.
func (c *Client) PushGated(ctx context.Context, step, version int64, gate Gate) (int64, error) {
	g := &checkedGate{gate: gate, c: c, spec: c.plan.Spec, sums: c.newSums(streamPush), states: make([]tensorState, len(c.plan.Spec)), all: make(chan struct{})}
	g.left.Store(int64(len(c.plan.Spec)))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go g.releaseAll(ctx) // the verdict needs every tensor, whichever server holds it
	return c.send(ctx, streamPush, step, version, nil, g, g.sums)
}

// checkedGate checks each tensor of a gated push once, as it is released.
type checkedGate struct {
	gate   Gate
	c      *Client
	spec   Spec
	sums   *chunkSums // filled in as tensors are released
	states []tensorState
	left   atomic.Int64
	all    chan struct{} // closed when every tensor is released and checked, or one failed
	done   sync.Once     // closes all
	bad    atomic.Pointer[error]
}

// fail ends the push: no server may complete it.
func (g *checkedGate) fail(err error) {
	g.bad.CompareAndSwap(nil, &err)
	g.done.Do(func() { close(g.all) })
}

type tensorState struct {
	once sync.Once
	data []float32
	err  error
}

func (g *checkedGate) tensor(ctx context.Context, t int) ([]float32, error) {
	st := &g.states[t]
	data, err := g.gate.Tensor(ctx, t)
	if err != nil {
		if ctx.Err() == nil {
			g.fail(err) // the gradient will not come
		}
		return nil, err
	}
	st.once.Do(func() {
		switch {
		case len(data) != g.spec[t].Size:
			st.err = fmt.Errorf("%w: %q has %d values, spec %d", ErrBadSpec, g.spec[t].Name, len(data), g.spec[t].Size)
		case !g.c.scanTensor(t, data, g.sums):
			st.err = fmt.Errorf("%w: %q", ErrNonFinite, g.spec[t].Name)
		}
		st.data = data
		if st.err != nil {
			g.fail(st.err)
		}
		if g.left.Add(-1) == 0 {
			g.done.Do(func() { close(g.all) })
		}
	})
	return st.data, st.err
}

// releaseAll waits for every tensor (until ctx ends).
func (g *checkedGate) releaseAll(ctx context.Context) {
	for t := range g.spec {
		if _, err := g.tensor(ctx, t); err != nil && g.bad.Load() != nil || ctx.Err() != nil {
			return
		}
	}
}

// verdict waits until every tensor is released: nil if all are sound.
func (g *checkedGate) verdict(ctx context.Context) error {
	select {
	case <-g.all:
	case <-ctx.Done():
		return ctx.Err()
	}
	if e := g.bad.Load(); e != nil {
		return *e
	}
	return nil
}

// Init sends a run's initial weights (and State values) to every server.
// A server accepts Init once; afterwards it answers ReasonInitialised.
func (c *Client) Init(ctx context.Context, tensors [][]float32) error {
	sums, err := c.checkPush(streamInit, tensors)
	if err != nil {
		return err
	}
	_, err = c.send(ctx, streamInit, 0, 0, tensors, nil, sums)
	return err
}

// send pushes tensors, or with a gate the tensors it releases, to every
// server.
func (c *Client) send(ctx context.Context, stream int, step, version int64, tensors [][]float32, gate *checkedGate, sums *chunkSums) (int64, error) {
	n := len(c.conns)
	replies := make([]PushReply, n)
	errs := make([]error, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = c.sendTo(ctx, i, stream, step, version, tensors, gate, sums, &replies[i])
			if gate != nil && gate.bad.Load() != nil {
				cancel() // no server may get the whole push
			}
		})
	}
	wg.Wait()
	if gate != nil {
		if err := gate.bad.Load(); err != nil {
			return -1, *err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return -1, err
	}
	v := replies[0].Version
	for _, r := range replies[1:] {
		v = min(v, r.Version)
	}
	return v, nil
}

func (c *Client) sendTo(ctx context.Context, i, stream int, step, version int64, tensors [][]float32, gate *checkedGate, sums *chunkSums, reply *PushReply) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	desc := &serviceDesc.Streams[stream]
	st, err := c.conns[i].NewStream(ctx, desc, "/"+ServiceName+"/"+desc.StreamName)
	if err != nil {
		return fmt.Errorf("wire: server %d: %w", i, err)
	}
	var enc *encoder
	if stream == streamPush && c.enc != nil {
		enc = &c.enc[i]
		enc.mu.Lock()
		defer enc.mu.Unlock()
	}
	sent, err := c.sendChunks(ctx, st, i, step, version, tensors, gate, sums, enc)
	if stream == streamPush {
		c.pushed.Add(uint64(sent))
	}
	if err != nil {
		return fmt.Errorf("wire: push to server %d: %w", i, err)
	}
	// The payloads alias the caller's tensors (or enc's buffer). That is
	// safe once the reply is in: the server answers after reading the
	// whole push (or after refusing it, when the rest no longer matters).
	if err := st.RecvMsg(reply); err != nil {
		return fmt.Errorf("wire: push to server %d: %w", i, err)
	}
	if reply.Server != i {
		return fmt.Errorf("wire: push to server %d: reply from server %d", i, reply.Server)
	}
	if !reply.Accepted {
		e := &RejectedError{Server: i, Reason: reply.Reason, Version: reply.Version}
		if reply.RunID != c.runID {
			e.Detail = fmt.Sprintf("server runs %q", reply.RunID)
		}
		return e
	}
	if reply.RunID != c.runID {
		return fmt.Errorf("wire: push to server %d: accepted by run %q", i, reply.RunID)
	}
	if enc != nil && enc.next != nil {
		// the server has the push: what it was not sent is the residual
		enc.residual, enc.next = enc.next, enc.residual
	}
	return nil
}

// sendChunks streams server i's parts, encoded by enc (nil: float32), and
// returns the payload bytes sent. An io.EOF from SendMsg means the server
// has answered early (a refusal); the caller reads the answer.
func (c *Client) sendChunks(ctx context.Context, st grpc.ClientStream, i int, step, version int64, tensors [][]float32, gate *checkedGate, sums *chunkSums, enc *encoder) (int, error) {
	ch := Chunk{
		Type: TypePushChunk, RunID: c.runID, WorkerID: c.workerID, Plan: c.plan.Fingerprint(), Flags: c.flags,
		Step: step, Version: version, Server: i,
	}
	parts := c.plan.ServerParts(i)
	if enc != nil {
		enc.prepare(c.comp, parts, c.chunkFloats)
	}
	sent, used, j := 0, 0, 0 // j: the chunk's index in the push
	for k, p := range parts {
		var t []float32
		if gate != nil {
			var err error
			if t, err = gate.tensor(ctx, p.Tensor); err != nil {
				return sent, err
			}
		} else {
			t = tensors[p.Tensor]
		}
		data := t[p.Offset : p.Offset+p.Len]
		for off := 0; off < p.Len; off += c.chunkFloats {
			n := min(c.chunkFloats, p.Len-off)
			if gate != nil && k == len(parts)-1 && off+n == p.Len {
				// the last chunk completes the push: only if every
				// server's tensors are sound
				if err := gate.verdict(ctx); err != nil {
					return sent, err
				}
			}
			ch.Part, ch.Offset, ch.Payload = p.ID, off, Bytes(data[off:off+n])
			ch.Encoding, ch.Scale, ch.Count = EncodingFloat32, 0, 0
			ch.CRC, ch.HasCRC = sums.sum(i, j, p)
			j++
			if enc != nil && p.Kind == Param {
				used += enc.encode(&ch, c.comp, data[off:off+n], p.Flat+off, used)
			}
			sent += len(ch.Payload)
			if err := st.SendMsg(&ch); err != nil {
				if errors.Is(err, io.EOF) {
					return sent, nil
				}
				return sent, err
			}
		}
	}
	return sent, st.CloseSend()
}

// prepare sizes the buffers for a push of parts.
func (e *encoder) prepare(comp Compression, parts []Part, chunkFloats int) {
	floats, bytes := 0, 0
	for _, p := range parts {
		floats = max(floats, p.Flat+p.Len)
		if p.Kind != Param {
			continue
		}
		for off := 0; off < p.Len; off += chunkFloats {
			n := min(chunkFloats, p.Len-off)
			bytes += payloadBytes(comp.Encoding, n, TopKCount(n, comp.TopK))
		}
	}
	if len(e.buf) < bytes {
		e.buf = make([]byte, bytes)
	}
	if comp.Encoding == EncodingTopK && len(e.residual) != floats {
		e.residual, e.next = make([]float32, floats), make([]float32, floats)
	}
}

// encode sets ch's payload to g (at flat in the server's layout) encoded
// into e.buf[used:], and returns the bytes used. Top-k sends the largest
// of g plus the residual and leaves the rest in e.next.
func (e *encoder) encode(ch *Chunk, comp Compression, g []float32, flat, used int) int {
	ch.Encoding, ch.Count = comp.Encoding, len(g)
	dst := e.buf[used:]
	var n int
	switch comp.Encoding {
	case EncodingFloat16:
		n = 2 * len(g)
		ch.Scale = EncodeF16(dst[:n], g)
	case EncodingTopK:
		x := e.next[flat : flat+len(g)]
		r := e.residual[flat : flat+len(g)]
		for j, v := range g {
			x[j] = v + r[j]
		}
		n = e.sel.encode(dst, x, TopKCount(len(g), comp.TopK))
	}
	ch.Payload = dst[:n:n]
	return n
}
