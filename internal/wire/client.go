package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// ClientConfig configures a worker's connection to the parameter servers.
type ClientConfig struct {
	RunID    string
	WorkerID string
	// Addrs holds one address per server, in server-index order; their
	// number is the plan's server count. SetAddrs moves a server to another
	// address later (it was restarted elsewhere).
	Addrs []string
	// Spec is the model's tensors, exactly as the servers have it.
	Spec Spec
	// ChunkBytes is the payload size of pushed and pulled chunks; 0 means
	// DefaultChunkBytes. It is rounded down to a multiple of 4 and clamped
	// to [MinChunkBytes, MaxChunkBytes].
	ChunkBytes int
	// NoChecksum turns off the CRC-32C of pushed and pulled payloads
	// (FlagChecksum), trading integrity for a little CPU (checksums are
	// computed while the bytes are in cache: see FlagChecksum).
	NoChecksum bool
	// Compression is how pushes encode Param gradients (the zero value:
	// float32, uncompressed). With EncodingTopK the client keeps, per
	// server, the residual of what it did not send and adds it to the next
	// push (error feedback); a new Client starts with a zero residual.
	Compression Compression
	// TLS, if set, is the client's mutual TLS (see DialOptions); nil dials
	// plaintext.
	TLS *tls.Config
	// DialOptions are appended to DialOptions(TLS).
	DialOptions []grpc.DialOption
}

// Client is what a worker uses to talk to all parameter servers: it splits
// pushes by the plan and sends to every server in parallel, and assembles
// pulls into the caller's tensors. It keeps no per-step buffers: pushed
// payloads are sent straight from the caller's slices and pulled payloads
// land straight in them. A Client is safe for concurrent use, but a worker
// normally has one Push or Pull in flight at a time.
type Client struct {
	runID, workerID string
	plan            *Plan
	chunkFloats     int
	flags           uint64
	// conns[i] dials server i through resolvers[i], whose one address is
	// addrs[i]: SetAddrs changes where a connection goes without a new
	// connection object, so every push, pull and call on it follows
	conns     []*grpc.ClientConn
	resolvers []*manual.Resolver
	addrMu    sync.Mutex
	addrs     []string
	comp      Compression
	enc       []encoder // per server, when compressing
	pushed    atomic.Uint64
	// where each tensor's parts are: (server, index in its ServerParts)
	where [][]partRef
	// per server, the number of chunks of a push or pull and the first
	// chunk of each of its parts
	chunks     []int
	firstChunk [][]int
}

// partRef is part k of server i's ServerParts.
type partRef struct{ server, k int }

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

// NewClient validates cfg, builds the plan and creates (lazy) connections
// to every server.
func NewClient(cfg ClientConfig) (*Client, error) {
	switch {
	case cfg.RunID == "" || len(cfg.RunID) > MaxStringBytes:
		return nil, fmt.Errorf("wire: run id %q: want 1..%d bytes", cfg.RunID, MaxStringBytes)
	case cfg.WorkerID == "" || len(cfg.WorkerID) > MaxStringBytes:
		return nil, fmt.Errorf("wire: worker id %q: want 1..%d bytes", cfg.WorkerID, MaxStringBytes)
	case len(cfg.Addrs) == 0:
		return nil, errors.New("wire: no server addresses")
	}
	if err := cfg.Compression.Validate(); err != nil {
		return nil, err
	}
	plan, err := NewPlan(cfg.Spec, len(cfg.Addrs))
	if err != nil {
		return nil, err
	}
	c := &Client{runID: cfg.RunID, workerID: cfg.WorkerID, plan: plan, chunkFloats: ClampChunkBytes(cfg.ChunkBytes) / 4, flags: FlagChecksum,
		comp: cfg.Compression}
	if c.comp.Encoding != EncodingFloat32 {
		c.enc = make([]encoder, len(cfg.Addrs))
	}
	if cfg.NoChecksum {
		c.flags = 0
	}
	c.where = make([][]partRef, len(plan.Spec))
	c.chunks = make([]int, len(cfg.Addrs))
	c.firstChunk = make([][]int, len(cfg.Addrs))
	for i := range cfg.Addrs {
		for k, p := range plan.ServerParts(i) {
			c.where[p.Tensor] = append(c.where[p.Tensor], partRef{i, k})
			c.firstChunk[i] = append(c.firstChunk[i], c.chunks[i])
			c.chunks[i] += (p.Len + c.chunkFloats - 1) / c.chunkFloats
		}
	}
	opts := append(DialOptions(cfg.TLS), cfg.DialOptions...)
	for i, a := range cfg.Addrs {
		if a == "" {
			c.Close()
			return nil, fmt.Errorf("wire: server %d: empty address", i)
		}
		r := manual.NewBuilderWithScheme(serverScheme)
		r.InitialState(serverState(a))
		conn, err := grpc.NewClient(fmt.Sprintf("%s:///server-%d", serverScheme, i), append(opts, grpc.WithResolvers(r))...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("wire: server %d at %q: %w", i, a, err)
		}
		c.conns = append(c.conns, conn)
		c.resolvers = append(c.resolvers, r)
	}
	c.addrs = slices.Clone(cfg.Addrs)
	return c, nil
}

// serverScheme is the resolver scheme of a Client's connections: each
// resolves to the one address SetAddrs last gave its server.
const serverScheme = "tailor-ps"

// serverState is a resolver state of one server address. ServerName
// carries the address as the TLS server name and :authority, which a
// resolver's target would otherwise provide.
func serverState(addr string) resolver.State {
	return resolver.State{Addresses: []resolver.Address{{Addr: addr, ServerName: addr}}}
}

// ResetResidual forgets the top-k residual of every server, as if the
// Client were new: after a rollback to a checkpoint, whose state holds no
// residual, the gradients it carries belong to undone steps.
func (c *Client) ResetResidual() {
	for i := range c.enc {
		e := &c.enc[i]
		e.mu.Lock()
		clear(e.residual)
		e.mu.Unlock()
	}
}

// Addrs returns each server's current address, in server-index order.
func (c *Client) Addrs() []string {
	c.addrMu.Lock()
	defer c.addrMu.Unlock()
	return slices.Clone(c.addrs)
}

// SetAddrs moves the servers whose address changed to the new one (a
// server restarted elsewhere): their connections close the old transport
// and dial the new address, and every later push, pull or call goes there.
// Calls in flight on the old address fail. addrs has one address per
// server; it returns the indexes of the servers that moved.
func (c *Client) SetAddrs(addrs []string) ([]int, error) {
	if len(addrs) != len(c.resolvers) {
		return nil, fmt.Errorf("wire: %d server addresses for %d servers", len(addrs), len(c.resolvers))
	}
	if i := slices.Index(addrs, ""); i >= 0 {
		return nil, fmt.Errorf("wire: server %d: empty address", i)
	}
	c.addrMu.Lock()
	defer c.addrMu.Unlock()
	var moved []int
	for i, a := range addrs {
		if a == c.addrs[i] {
			continue
		}
		c.addrs[i] = a
		c.resolvers[i].UpdateState(serverState(a))
		moved = append(moved, i)
	}
	return moved, nil
}

// ClampChunkBytes is the chunk size used for a requested size n (0: the
// default).
func ClampChunkBytes(n int) int {
	if n == 0 {
		n = DefaultChunkBytes
	}
	return min(max(n, MinChunkBytes), MaxChunkBytes) &^ 3
}

// PushedBytes is the payload bytes of every push this client has sent
// (chunk headers, some 50 bytes a chunk, not counted; Init not counted).
func (c *Client) PushedBytes() uint64 { return c.pushed.Load() }

// Plan is the partition plan the client uses.
func (c *Client) Plan() *Plan { return c.plan }

// Close closes the connections.
func (c *Client) Close() error {
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// checkShape reports whether tensors align with the spec.
func (c *Client) checkShape(tensors [][]float32) error {
	if len(tensors) != len(c.plan.Spec) {
		return fmt.Errorf("%w: %d tensors, want %d", ErrShape, len(tensors), len(c.plan.Spec))
	}
	for i, t := range c.plan.Spec {
		if len(tensors[i]) != t.Size {
			return fmt.Errorf("%w: tensor %q has %d floats, want %d", ErrShape, t.Name, len(tensors[i]), t.Size)
		}
	}
	return nil
}

// checkPush checks tensors for a push (or Init) on stream and returns the
// CRC-32C of every float32 chunk it will send (nil without checksums): one
// pass over the tensors for both.
func (c *Client) checkPush(stream int, tensors [][]float32) (*chunkSums, error) {
	if err := c.checkShape(tensors); err != nil {
		return nil, err
	}
	sums := c.newSums(stream)
	var jobs []scanJob
	for t, data := range tensors {
		jobs = c.appendScan(jobs, t, data, sums)
	}
	if !runScan(jobs) {
		for t, data := range tensors { // name the first bad tensor in spec order
			if !Finite(data) {
				return nil, fmt.Errorf("%w: %q", ErrNonFinite, c.plan.Spec[t].Name)
			}
		}
	}
	return sums, nil
}

// chunkSums holds the CRC-32C of a push's float32 chunks, computed while
// they are checked for NaN and Inf, so that sending does not read the
// tensors once more to checksum them.
type chunkSums struct {
	crc  [][]uint32 // per server, per chunk (Client.firstChunk)
	skip bool       // Param parts are compressed: their payloads are checksummed when encoded
}

// newSums is the chunkSums of a push (or Init) on stream; nil without
// checksums.
func (c *Client) newSums(stream int) *chunkSums {
	if c.flags&FlagChecksum == 0 {
		return nil
	}
	s := &chunkSums{crc: make([][]uint32, len(c.chunks)), skip: stream == streamPush && c.enc != nil}
	for i, n := range c.chunks {
		s.crc[i] = make([]uint32, n)
	}
	return s
}

// covers reports whether the push's CRCs of part p are precomputed here.
func (s *chunkSums) covers(p Part) bool { return s != nil && !(s.skip && p.Kind == Param) }

// sum is the precomputed CRC-32C of chunk j of server i's push, if known.
func (s *chunkSums) sum(i, j int, p Part) (uint32, bool) {
	if !s.covers(p) {
		return 0, false
	}
	return s.crc[i][j], true
}

// scanTensor reports whether tensor t (data) is finite and, with sums,
// records the CRC-32C of each chunk its parts make.
func (c *Client) scanTensor(t int, data []float32, sums *chunkSums) bool {
	return runScan(c.appendScan(nil, t, data, sums))
}

// scanJob is one chunk to check for NaN and Inf and, if crc is not nil,
// to checksum into *crc.
type scanJob struct {
	b   []byte
	crc *uint32
}

// appendScan appends the chunks of tensor t's parts (data) to jobs.
func (c *Client) appendScan(jobs []scanJob, t int, data []float32, sums *chunkSums) []scanJob {
	for _, r := range c.where[t] {
		p := c.plan.ServerParts(r.server)[r.k]
		var crc []uint32
		if sums.covers(p) {
			crc = sums.crc[r.server][c.firstChunk[r.server][r.k]:]
		}
		b := Bytes(data[p.Offset : p.Offset+p.Len])
		for j := 0; len(b) > 0; j++ {
			n := min(len(b), 4*c.chunkFloats)
			job := scanJob{b: b[:n]}
			if crc != nil {
				job.crc = &crc[j]
			}
			jobs = append(jobs, job)
			b = b[n:]
		}
	}
	return jobs
}

// parallelScanBytes is the size from which runScan uses every core: the
// tensors are then read from memory once, at the speed of all cores,
// while the servers wait.
const parallelScanBytes = 4 << 20

// runScan runs jobs, each piece checked and checksummed while in cache
// (the data is read from memory once), on every core if they are big; it
// reports whether every chunk is finite (stopping at the first that is
// not).
func runScan(jobs []scanJob) bool {
	total := 0
	for _, j := range jobs {
		total += len(j.b)
	}
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	if total < parallelScanBytes || workers < 2 {
		for _, j := range jobs {
			if !j.run() {
				return false
			}
		}
		return true
	}
	var next atomic.Int64
	var bad atomic.Bool
	var wg sync.WaitGroup
	work := func() {
		for k := int(next.Add(1) - 1); k < len(jobs) && !bad.Load(); k = int(next.Add(1) - 1) {
			if !jobs[k].run() {
				bad.Store(true)
			}
		}
	}
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return !bad.Load()
}

func (j scanJob) run() bool {
	var sum uint32
	for o := 0; o < len(j.b); o += checkPiece {
		piece := j.b[o:min(len(j.b), o+checkPiece)]
		if !finiteBytes(piece) {
			return false
		}
		if j.crc != nil {
			sum = crc32.Update(sum, castagnoli, piece)
		}
	}
	if j.crc != nil {
		*j.crc = sum
	}
	return true
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

// Pull waits until every server's version is at least minVersion, then
// copies the weights (and State values) into into, aligned with the spec.
// It returns the smallest version received (servers may differ in async
// mode). On error into's contents are unspecified.
func (c *Client) Pull(ctx context.Context, minVersion int64, into [][]float32) (int64, error) {
	if err := c.checkShape(into); err != nil {
		return -1, err
	}
	n := len(c.conns)
	versions := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { versions[i], errs[i] = c.pullFrom(ctx, i, minVersion, into) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return -1, err
	}
	v := versions[0]
	for _, x := range versions[1:] {
		v = min(v, x)
	}
	return v, nil
}

func (c *Client) pullFrom(ctx context.Context, i int, minVersion int64, into [][]float32) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.conns[i].NewStream(ctx, &serviceDesc.Streams[streamPull], MethodPull)
	if err != nil {
		return -1, fmt.Errorf("wire: server %d: %w", i, err)
	}
	req := &PullRequest{
		RunID: c.runID, WorkerID: c.workerID, Plan: c.plan.Fingerprint(), Server: i,
		MinVersion: minVersion, ChunkBytes: c.chunkFloats * 4, Flags: c.flags,
	}
	if err := st.SendMsg(req); err != nil {
		return -1, fmt.Errorf("wire: pull from server %d: %w", i, err)
	}
	if err := st.CloseSend(); err != nil {
		return -1, fmt.Errorf("wire: pull from server %d: %w", i, err)
	}
	parts := c.plan.ServerParts(i)
	cur, off := 0, 0
	version := int64(-1)
	var bad error
	ch := &Chunk{}
	ch.Dst = func(h *Chunk, n int) ([]byte, error) {
		switch {
		case h.Type != TypePullChunk || h.Encoding != EncodingFloat32 || h.RunID != c.runID || h.Plan != c.plan.Fingerprint() || h.Server != i:
			bad = fmt.Errorf("wire: pull from server %d: chunk of type %d, run %q, plan %x, server %d", i, h.Type, h.RunID, h.Plan, h.Server)
		case version >= 0 && h.Version != version:
			bad = fmt.Errorf("wire: pull from server %d: version %d after %d", i, h.Version, version)
		case h.Version < minVersion:
			bad = fmt.Errorf("wire: pull from server %d: version %d, asked for ≥ %d", i, h.Version, minVersion)
		case cur >= len(parts) || h.Part != parts[cur].ID || h.Offset != off || n == 0 || n/4 > parts[cur].Len-off:
			bad = fmt.Errorf("wire: pull from server %d: unexpected chunk: part %d offset %d, %d bytes", i, h.Part, h.Offset, n)
		}
		if bad != nil {
			return nil, bad
		}
		version = h.Version
		p := parts[cur]
		return Bytes(into[p.Tensor][p.Offset+off : p.Offset+off+n/4]), nil
	}
	for {
		err := st.RecvMsg(ch)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if bad != nil {
				return -1, bad
			}
			return -1, fmt.Errorf("wire: pull from server %d: %w", i, rejectionFromStatus(i, err))
		}
		if off += ch.Len(); off == parts[cur].Len {
			cur, off = cur+1, 0
		}
	}
	if cur != len(parts) {
		return -1, fmt.Errorf("wire: pull from server %d: stream ended after %d of %d parts", i, cur, len(parts))
	}
	return version, nil
}

// Idle tells every server that this worker has no batch for now, its next
// step being step (bounded staleness: see IdleRequest).
func (c *Client) Idle(ctx context.Context, step int64) error {
	errs := make([]error, len(c.conns))
	var wg sync.WaitGroup
	for i := range c.conns {
		wg.Go(func() {
			r := new(PushReply)
			if err := c.conns[i].Invoke(ctx, MethodIdle, &IdleRequest{RunID: c.runID, WorkerID: c.workerID, Step: step}, r); err != nil {
				errs[i] = fmt.Errorf("wire: idle at server %d: %w", i, rejectionFromStatus(i, err))
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Checkpoint sends one request per server (reqs[i] to server i, RunID and
// WorkerID filled in) and returns the replies in server order.
func (c *Client) Checkpoint(ctx context.Context, reqs []*CheckpointRequest) ([]*CheckpointReply, error) {
	if len(reqs) != len(c.conns) {
		return nil, fmt.Errorf("wire: %d checkpoint requests for %d servers", len(reqs), len(c.conns))
	}
	out := make([]*CheckpointReply, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() {
			req.RunID, req.WorkerID = c.runID, c.workerID
			r := new(CheckpointReply)
			if err := c.conns[i].Invoke(ctx, MethodCheckpoint, req, r); err != nil {
				errs[i] = fmt.Errorf("wire: checkpoint at server %d: %w", i, rejectionFromStatus(i, err))
				return
			}
			if r.Server != i {
				errs[i] = fmt.Errorf("wire: checkpoint reply of server %d from server %d", r.Server, i)
				return
			}
			out[i] = r
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// Status asks every server for its load and counters, in server order.
func (c *Client) Status(ctx context.Context) ([]*StatusReply, error) {
	n := len(c.conns)
	out := make([]*StatusReply, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := new(StatusReply)
			if err := c.conns[i].Invoke(ctx, MethodStatus, &StatusRequest{RunID: c.runID, WorkerID: c.workerID}, r); err != nil {
				errs[i] = fmt.Errorf("wire: status of server %d: %w", i, rejectionFromStatus(i, err))
				return
			}
			out[i] = r
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}
