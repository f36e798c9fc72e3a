package coordinator_test

// Integration: the decision engine behind real gRPC, two parameter servers
// that ask it (paramserver.Config.Decider), and workers using wire.Client.
// The roles never import each other; this test composes them.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/optim"
	"github.com/tailorml/tailor/paramserver"
)

const run = "run-steps"

var workers = []string{"w0", "w1", "w2"}

func testSpec() wire.Spec {
	return wire.Spec{
		{Name: "conv/w", Size: 3000},
		{Name: "conv/b", Size: 7},
		{Name: "dense/w", Size: 20000}, // split between the two servers
		{Name: "dense/b", Size: 13},
		{Name: "bn/mean", Size: 16, Kind: wire.State},
		{Name: "bn/var", Size: 16, Kind: wire.State},
	}
}

var adam = optim.AdamConfig{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7, Decay: 0.01}

// rig is a coordinator's Steps service and P parameter servers that ask it.
type rig struct {
	steps   *coordinator.Steps
	coord   *grpc.ClientConn // to the Steps service
	servers []*paramserver.Server
	addrs   []string
	spec    wire.Spec
}

func serveSteps(tb testing.TB, steps *coordinator.Steps) *grpc.ClientConn {
	tb.Helper()
	g := grpc.NewServer(wire.ServerOptions(nil, "")...)
	wire.RegisterSteps(g, steps)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go g.Serve(lis)
	tb.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), wire.DialOptions(nil)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

func startRig(tb testing.TB, servers, quorum int) *rig {
	tb.Helper()
	steps, err := coordinator.NewSteps(coordinator.StepsConfig{RunID: run, Servers: servers, Quorum: quorum, Deadline: time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(steps.Close)
	r := &rig{steps: steps, coord: serveSteps(tb, steps), spec: testSpec()}
	members := paramserver.NewStaticMembers(workers...)
	for i := range servers {
		cfg := paramserver.DefaultConfig(run, r.spec)
		cfg.Servers, cfg.Index = servers, i
		cfg.Adam = adam
		cfg.StepDeadline = 20 * time.Second
		cfg.Decider = wire.NewDeciderClient(r.coord, run, i)
		s, err := paramserver.New(cfg, members)
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
		tb.Cleanup(func() { cancel(); <-done; s.Close() })
		r.servers = append(r.servers, s)
		r.addrs = append(r.addrs, lis.Addr().String())
	}
	return r
}

func (r *rig) client(tb testing.TB, worker string) *wire.Client {
	tb.Helper()
	c, err := wire.NewClient(wire.ClientConfig{RunID: run, WorkerID: worker, Addrs: r.addrs, Spec: r.spec, ChunkBytes: wire.MinChunkBytes})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func (r *rig) init(tb testing.TB) [][]float32 {
	tb.Helper()
	w := tensors(r.spec, 42)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.client(tb, "init").Init(ctx, w); err != nil {
		tb.Fatal(err)
	}
	return w
}

func (r *rig) status(tb testing.TB, i int) *wire.StatusReply {
	tb.Helper()
	st, err := r.servers[i].Status(context.Background(), &wire.StatusRequest{RunID: run, WorkerID: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	return st
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

func tensors(spec wire.Spec, seed uint64) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	out := make([][]float32, len(spec))
	for i, t := range spec {
		out[i] = make([]float32, t.Size)
		for j := range out[i] {
			out[i][j] = float32(rng.NormFloat64() * 0.1)
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

// reference is the single-process computation: whole tensors, one Adam.
type reference struct {
	spec    wire.Spec
	weights [][]float32
	adam    *optim.Adam
}

func newReference(tb testing.TB, spec wire.Spec, init [][]float32) *reference {
	tb.Helper()
	var sizes []int
	for _, t := range spec {
		if t.Kind == wire.Param {
			sizes = append(sizes, t.Size)
		}
	}
	a, err := optim.NewAdam(adam, sizes)
	if err != nil {
		tb.Fatal(err)
	}
	w := make([][]float32, len(init))
	for i := range init {
		w[i] = slices.Clone(init[i])
	}
	return &reference{spec: spec, weights: w, adam: a}
}

// step averages grads (in rank order: float64 sum, divided, rounded) and
// applies Adam; State tensors take the average.
func (r *reference) step(tb testing.TB, grads ...[][]float32) {
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
	if err := r.adam.Update(params, gs); err != nil {
		tb.Fatal(err)
	}
}

func sameBits(tb testing.TB, spec wire.Spec, got, want [][]float32) {
	tb.Helper()
	bad := 0
	for i := range want {
		for j := range want[i] {
			if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
				if bad < 5 {
					tb.Errorf("%s[%d]: got %v, want %v", spec[i].Name, j, got[i][j], want[i][j])
				}
				bad++
			}
		}
	}
	if bad > 0 {
		tb.Errorf("%d floats differ", bad)
	}
}

// pull returns the weights of version v from every server.
func (r *rig) pull(tb testing.TB, v int64) [][]float32 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	into := zeros(r.spec)
	if got, err := r.client(tb, "init").Pull(ctx, v, into); err != nil || got != v {
		tb.Fatalf("pull of version %d: got version %d, %v", v, got, err)
	}
	return into
}

// rejections returns the rejection reason of every server in err, by
// server index.
func rejections(err error) map[int]string {
	out := map[int]string{}
	var walk func(error)
	walk = func(e error) {
		if re := (*wire.RejectedError)(nil); errors.As(e, &re) {
			out[re.Server] = re.Reason
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return out
}

// Normal steps: three workers push in random order with random delays;
// both servers end exactly at the single-process result.
func TestDecidedStepsMatchReference(t *testing.T) {
	const steps = 4
	r := startRig(t, 2, 0)
	init := r.init(t)
	if err := r.steps.SetParticipants(0, workers); err != nil {
		t.Fatal(err)
	}
	ref := newReference(t, r.spec, init)
	for step := range steps {
		ref.step(t, grad(r.spec, 0, step), grad(r.spec, 1, step), grad(r.spec, 2, step))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for w, id := range workers {
		c := r.client(t, id)
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(7, uint64(w)))
			into := zeros(r.spec)
			for step := range int64(steps) {
				if v, err := c.Pull(ctx, step, into); err != nil || v != step {
					errs[w] = fmt.Errorf("pull %d: version %d, %v", step, v, err)
					return
				}
				time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
				v, err := c.Push(ctx, step, step, grad(r.spec, w, int(step)))
				if err != nil || v != step+1 {
					// With a decider, a push answers once the step is applied.
					errs[w] = fmt.Errorf("push %d: version %d, %v", step, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", w, err)
		}
	}
	sameBits(t, r.spec, r.pull(t, steps), ref.weights)
	for i := range r.servers {
		st := r.status(t, i)
		if st.Version != steps || st.Steps != steps || st.Missing != 0 || len(st.Rejected) != 0 {
			t.Errorf("server %d: version %d, steps %d, missing %d, rejected %v; want %d, %d, 0, none", i, st.Version, st.Steps, st.Missing, st.Rejected, steps, steps)
		}
		if err := r.servers[i].Err(); err != nil {
			t.Errorf("server %d: %v", i, err)
		}
	}
	for step := range int64(steps) {
		if d, ok := r.steps.Decision(step); !ok || !slices.Equal(d.Included, workers) || d.Excluded != nil {
			t.Errorf("decision of step %d: %+v, %v", step, d, ok)
		}
	}
}

// pushTo pushes worker's step-0 gradient to server i only, as a worker
// that dies between its servers would; the push waits for the decision
// until ctx ends.
func (r *rig) pushTo(ctx context.Context, tb testing.TB, i int, worker string, ts [][]float32) {
	tb.Helper()
	conn, err := grpc.NewClient(r.addrs[i], wire.DialOptions(nil)...)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	st, err := wire.NewStream(ctx, conn, wire.MethodPush)
	if err != nil {
		tb.Error(err)
		return
	}
	plan := r.servers[i].Plan()
	for _, p := range plan.ServerParts(i) {
		ch := &wire.Chunk{
			Type: wire.TypePushChunk, RunID: run, WorkerID: worker, Plan: plan.Fingerprint(), Flags: wire.FlagChecksum,
			Server: i, Part: p.ID, Payload: wire.Bytes(ts[p.Tensor][p.Offset : p.Offset+p.Len]),
		}
		if err := st.SendMsg(ch); err != nil {
			tb.Error(err)
			return
		}
	}
	st.CloseSend()
	st.RecvMsg(new(wire.PushReply)) // ends when ctx does: the worker is dead
}

// A worker pushes its slice to server 0, then dies before pushing to
// server 1. Server 0 holds its gradient, server 1 does not; once it is
// dropped from the participants both apply the same step without it.
func TestDecidedStepsWorkerDiesMidPush(t *testing.T) {
	r := startRig(t, 2, 0)
	init := r.init(t)
	r.steps.SetParticipants(0, workers)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	dead, die := context.WithCancel(ctx)
	deadDone := make(chan struct{})
	go func() { defer close(deadDone); r.pushTo(dead, t, 0, "w2", grad(r.spec, 2, 0)) }()
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for w := range 2 {
		c := r.client(t, workers[w])
		wg.Go(func() { _, errs[w] = c.Push(ctx, 0, 0, grad(r.spec, w, 0)) })
	}
	eventually(t, 10*time.Second, "3 gradients on server 0, 2 on server 1", func() bool {
		return r.status(t, 0).Pending == 3 && r.status(t, 1).Pending == 2
	})
	eventually(t, 10*time.Second, "the coordinator waiting for w2 alone", func() bool {
		st := r.steps.State(0)
		return len(st.Complete) == 2 && slices.Equal(st.Waiting, []string{"w2"})
	})
	if v := r.servers[0].Version(); v != 0 {
		t.Fatalf("server 0 applied step 0 before w2 was dropped: version %d", v)
	}
	die()
	<-deadDone
	r.steps.Drop("w2") // the membership saw it go
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Fatalf("push of w%d: %v", w, err)
		}
	}
	ref := newReference(t, r.spec, init)
	ref.step(t, grad(r.spec, 0, 0), grad(r.spec, 1, 0))
	sameBits(t, r.spec, r.pull(t, 1), ref.weights)
	d, ok := r.steps.Decision(0)
	if !ok || !slices.Equal(d.Included, []string{"w0", "w1"}) || !slices.Equal(d.Excluded, []string{"w2"}) {
		t.Errorf("decision of step 0: %+v, %v", d, ok)
	}
	for i := range r.servers {
		if st := r.status(t, i); st.Version != 1 || st.Missing != 1 || st.Pending != 0 {
			t.Errorf("server %d: version %d, missing %d, pending %d; want 1, 1, 0", i, st.Version, st.Missing, st.Pending)
		}
	}
}

// Quorum 2 of 3: all three gradients are held on both servers before the
// step can be decided; the two lowest ranks make it, and the third learns
// from both servers that it was late.
func TestDecidedStepsQuorumLate(t *testing.T) {
	r := startRig(t, 2, 2)
	init := r.init(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make([]error, len(workers))
	versions := make([]int64, len(workers))
	var wg sync.WaitGroup
	for w, id := range workers {
		c := r.client(t, id)
		wg.Go(func() { versions[w], errs[w] = c.Push(ctx, 0, 0, grad(r.spec, w, 0)) })
	}
	// No participants yet: nothing is decided until the coordinator has
	// heard from both servers that all three are complete.
	eventually(t, 10*time.Second, "3 workers complete on both servers", func() bool {
		return len(r.steps.State(0).Complete) == 3
	})
	r.steps.SetParticipants(0, workers)
	wg.Wait()
	for w := range 2 {
		if errs[w] != nil || versions[w] != 1 {
			t.Errorf("push of w%d: version %d, %v; want 1, nil", w, versions[w], errs[w])
		}
	}
	if got := rejections(errs[2]); got[0] != wire.ReasonLate || got[1] != wire.ReasonLate {
		t.Errorf("push of w2: %v; want %s from both servers", errs[2], wire.ReasonLate)
	}
	ref := newReference(t, r.spec, init)
	ref.step(t, grad(r.spec, 0, 0), grad(r.spec, 1, 0))
	sameBits(t, r.spec, r.pull(t, 1), ref.weights)
	// Retried pushes (a reply lost) get the same answers, and change
	// nothing.
	_, err := r.client(t, "w2").Push(ctx, 0, 0, grad(r.spec, 2, 0))
	if got := rejections(err); got[0] != wire.ReasonLate || got[1] != wire.ReasonLate {
		t.Errorf("retried late push: %v; want %s", err, wire.ReasonLate)
	}
	if v, err := r.client(t, "w0").Push(ctx, 0, 0, grad(r.spec, 0, 0)); err != nil || v != 1 {
		t.Errorf("retried included push: version %d, %v; want 1, accepted", v, err)
	}
	for i := range r.servers {
		st := r.status(t, i)
		var late uint64
		for _, rc := range st.Rejected {
			if rc.Reason == wire.ReasonLate {
				late = rc.Count
			}
		}
		if st.Version != 1 || st.Steps != 1 || st.Missing != 1 || late != 2 {
			t.Errorf("server %d: version %d, steps %d, missing %d, late %d; want 1, 1, 1, 2", i, st.Version, st.Steps, st.Missing, late)
		}
	}
}

// A server asking twice (or both servers, or with another set) gets the
// same decision; other runs and server indexes are refused.
func TestDecideService(t *testing.T) {
	steps, err := coordinator.NewSteps(coordinator.StepsConfig{RunID: run, Servers: 2, Deadline: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(steps.Close)
	conn := serveSteps(t, steps)
	steps.SetParticipants(0, []string{"w1", "w0"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ps0, ps1 := wire.NewDeciderClient(conn, run, 0), wire.NewDeciderClient(conn, run, 1)
	var d0 wire.Decision
	var err0 error
	done := make(chan struct{})
	go func() { defer close(done); d0, err0 = ps0.Decide(ctx, 0, []string{"w0", "w1"}) }()
	d1, err := ps1.Decide(ctx, 0, []string{"w0", "w1"})
	<-done
	want := wire.Decision{Step: 0, Included: []string{"w1", "w0"}}
	if err != nil || err0 != nil || !slices.Equal(d0.Included, want.Included) || !slices.Equal(d1.Included, want.Included) {
		t.Fatalf("decisions %+v, %v and %+v, %v; want %+v", d0, err0, d1, err, want)
	}
	again, err := ps0.Decide(ctx, 0, []string{"w0"})
	if err != nil || !slices.Equal(again.Included, want.Included) || again.Step != 0 {
		t.Errorf("asked again: %+v, %v; want %+v", again, err, want)
	}
	for _, tc := range []struct {
		c      *wire.DeciderClient
		reason string
	}{
		{wire.NewDeciderClient(conn, "another-run", 0), wire.ReasonRunID},
		{wire.NewDeciderClient(conn, run, 2), wire.ReasonPlan},
	} {
		_, err := tc.c.Decide(ctx, 0, []string{"w0"})
		if re := (*wire.RejectedError)(nil); !errors.As(err, &re) || re.Reason != tc.reason {
			t.Errorf("got %v, want a rejection for %s", err, tc.reason)
		}
	}
	// Bad reports never leave the client.
	if _, err := ps0.Decide(ctx, 1, []string{"w1", "w0"}); err == nil {
		t.Error("unsorted report accepted")
	}
}
