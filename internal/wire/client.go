package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/tailorml/tailor/internal/identity"
)

// This file holds the Client's setup (config, plan, connections, server
// addresses) and its pull path, with the small calls (Idle, Checkpoint,
// Status). The push path is in push.go, the checks of pushed tensors in
// scan.go.

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
	// the servers dialled must be parameter servers of the run
	opts := append(DialOptions(identity.ForPeer(cfg.TLS, cfg.RunID, identity.ParamServer)), cfg.DialOptions...)
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
