package paramserver

import (
	"context"
	"errors"
	"fmt"
	"github.com/tailorml/tailor/internal/job"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/optim"
)

const testRun = "run-test"

// testSpec is a small model: a "big" tensor that a two-server plan
// splits, small ones that it does not, and BatchNorm-like State tensors.
// The weights ("w") are kernels.
func testSpec() wire.Spec {
	return wire.Spec{
		{Name: "conv/w", Size: 3000, Kernel: true},
		{Name: "conv/b", Size: 7},
		{Name: "dense/w", Size: 20000, Kernel: true},
		{Name: "dense/b", Size: 13},
		{Name: "bn/mean", Size: 16, Kind: wire.State},
		{Name: "bn/var", Size: 16, Kind: wire.State},
	}
}

func testConfig(tb testing.TB, mode job.Mode, servers, index int) Config {
	tb.Helper()
	cfg := DefaultConfig(testRun, testSpec())
	cfg.Mode = mode
	cfg.Servers, cfg.Index = servers, index
	cfg.Adam = optim.AdamConfig{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7, Decay: 0.01}
	cfg.StepDeadline = 20 * time.Second
	cfg.ListenAddr = "127.0.0.1:0"
	return cfg
}

// cluster is P servers on loopback ports.
type psCluster struct {
	servers []*Server
	addrs   []string
	spec    wire.Spec
	stops   []func() // stop server i (idempotent)
}

// startCluster starts one server per config; they stop when the test ends.
func startCluster(tb testing.TB, members Membership, cfgs ...Config) *psCluster {
	tb.Helper()
	c := &psCluster{spec: cfgs[0].Spec}
	for _, cfg := range cfgs {
		s, err := New(cfg, members)
		if err != nil {
			tb.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Serve(ctx, lis) }()
		var once sync.Once
		stop := func() { once.Do(func() { cancel(); <-done; s.Close() }) }
		tb.Cleanup(stop)
		c.stops = append(c.stops, stop)
		c.servers = append(c.servers, s)
		c.addrs = append(c.addrs, lis.Addr().String())
	}
	return c
}

func (c *psCluster) client(tb testing.TB, worker string) *wire.Client {
	tb.Helper()
	return c.clientOf(tb, testRun, worker)
}

func (c *psCluster) clientOf(tb testing.TB, run, worker string) *wire.Client {
	tb.Helper()
	cl, err := wire.NewClient(wire.ClientConfig{RunID: run, WorkerID: worker, Addrs: c.addrs, Spec: c.spec, ChunkBytes: wire.MinChunkBytes})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cl.Close() })
	return cl
}

// status returns server i's status.
func (c *psCluster) status(tb testing.TB, i int) *wire.StatusReply {
	tb.Helper()
	r, err := c.servers[i].Status(context.Background(), &wire.StatusRequest{RunID: testRun, WorkerID: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func rejected(r *wire.StatusReply, reason string) uint64 {
	for _, rc := range r.Rejected {
		if rc.Reason == reason {
			return rc.Count
		}
	}
	return 0
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// tensors makes values for spec from a seed: small, varied, deterministic.
func tensors(spec wire.Spec, seed uint64) [][]float32 {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	out := make([][]float32, len(spec))
	for i, t := range spec {
		out[i] = make([]float32, t.Size)
		for j := range out[i] {
			out[i][j] = float32(r.NormFloat64() * 0.1)
		}
	}
	return out
}

func grad(spec wire.Spec, worker, step int) [][]float32 {
	return tensors(spec, uint64(1000*worker+step+1))
}

func zeros(spec wire.Spec) [][]float32 {
	out := make([][]float32, len(spec))
	for i, t := range spec {
		out[i] = make([]float32, t.Size)
	}
	return out
}

func clone(ts [][]float32) [][]float32 {
	out := make([][]float32, len(ts))
	for i, t := range ts {
		out[i] = slices.Clone(t)
	}
	return out
}

// reference is the single-process computation the servers must match:
// whole tensors, one optim.Adam (kernels as the spec marks them).
type reference struct {
	spec    wire.Spec
	weights [][]float32
	adam    *optim.Adam
}

func newReference(tb testing.TB, cfg Config, init [][]float32) *reference {
	tb.Helper()
	var ts []optim.Tensor
	for _, t := range cfg.Spec {
		if t.Kind == wire.Param {
			ts = append(ts, optim.Tensor{Size: t.Size, Kernel: t.Kernel})
		}
	}
	a, err := optim.NewAdamFor(cfg.Adam, ts)
	if err != nil {
		tb.Fatal(err)
	}
	return &reference{spec: cfg.Spec, weights: clone(init), adam: a}
}

// step averages grads (already in worker-id order) — float64 sum, divided,
// rounded — and applies Adam; State tensors take the average.
func (r *reference) step(tb testing.TB, grads ...[][]float32) {
	tb.Helper()
	r.stepScaled(tb, 1, grads...)
}

// stepScaled is step with the learning rate times f.
func (r *reference) stepScaled(tb testing.TB, f float64, grads ...[][]float32) {
	tb.Helper()
	var params, gs [][]float32
	for i, t := range r.spec {
		avg := make([]float32, t.Size)
		for j := range avg {
			var sum float64
			for _, g := range grads {
				sum += float64(g[i][j])
			}
			avg[j] = float32(sum / float64(len(grads)))
		}
		if t.Kind == wire.State {
			r.weights[i] = avg
			continue
		}
		params, gs = append(params, r.weights[i]), append(gs, avg)
	}
	if err := r.adam.UpdateScaled(params, gs, f); err != nil {
		tb.Fatal(err)
	}
}

// sameBits fails unless got and want are bit-for-bit equal.
func sameBits(tb testing.TB, spec wire.Spec, got, want [][]float32) {
	tb.Helper()
	bad := 0
	for i := range want {
		for j := range want[i] {
			if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
				if bad < 5 {
					tb.Errorf("%s[%d]: got %v (%08x), want %v (%08x)", spec[i].Name, j, got[i][j], math.Float32bits(got[i][j]), want[i][j], math.Float32bits(want[i][j]))
				}
				bad++
			}
		}
	}
	if bad > 0 {
		tb.Errorf("%d floats differ", bad)
	}
}

// rawPush sends chunks as a push to one server, bypassing the client's
// checks, and returns the server's reply.
func rawPush(tb testing.TB, addr string, chunks []*wire.Chunk) (*wire.PushReply, error) {
	tb.Helper()
	conn, err := grpc.NewClient(addr, wire.DialOptions(nil)...)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := wire.NewStream(ctx, conn, wire.MethodPush)
	if err != nil {
		return nil, err
	}
	for _, c := range chunks {
		if err := st.SendMsg(c); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
	}
	_ = st.CloseSend()
	reply := new(wire.PushReply)
	if err := st.RecvMsg(reply); err != nil {
		return nil, err
	}
	return reply, nil
}

// pushChunks is the chunk sequence a client would send to server i.
func pushChunks(plan *wire.Plan, i int, worker string, step int64, ts [][]float32) []*wire.Chunk {
	var out []*wire.Chunk
	for _, p := range plan.ServerParts(i) {
		for off := 0; off < p.Len; off += 1024 {
			n := min(1024, p.Len-off)
			out = append(out, &wire.Chunk{
				Type: wire.TypePushChunk, RunID: testRun, WorkerID: worker, Plan: plan.Fingerprint(), Flags: wire.FlagChecksum,
				Step: step, Version: step, Server: i, Part: p.ID, Offset: off,
				Payload: slices.Clone(wire.Bytes(ts[p.Tensor][p.Offset+off : p.Offset+off+n])),
			})
		}
	}
	return out
}

func workerID(i int) string { return fmt.Sprintf("w%d", i) }
