package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
	"github.com/tailorml/tailor/internal/version"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/optim"
)

func TestSubmitLoad(t *testing.T) {
	cli := clustertest.Client(t, clustertest.Etcd(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := DefaultSpec("r1", "/data")
	if err := Submit(ctx, cli, s); err != nil {
		t.Fatal(err)
	}
	if err := Submit(ctx, cli, s); err != nil {
		t.Errorf("same spec again: %v", err)
	}
	s2 := s
	s2.Epochs = 3
	if err := Submit(ctx, cli, s2); !errors.Is(err, ErrExists) {
		t.Errorf("different spec: %v", err)
	}
	s3 := s
	s3.Workers = 5
	if err := Submit(ctx, cli, s3); err != nil {
		t.Errorf("another worker count: %v", err)
	}
	if got, err := Load(ctx, cli, "r1"); err != nil || got.Workers != 5 {
		t.Errorf("worker count after resubmission: %d, %v; want 5", got.Workers, err)
	}
	got, err := Load(ctx, cli, "r1")
	if err != nil || got.Epochs != s.Epochs || got.Augment != s.Augment {
		t.Errorf("load: %+v %v", got, err)
	}
	short, c2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer c2()
	if _, err := Wait(short, cli, "nope"); err == nil {
		t.Error("waiting for a missing run returned")
	}
	bad := s
	bad.Mode = "lockstep"
	bad.Run = "r2"
	if err := Submit(ctx, cli, bad); err == nil {
		t.Error("bad mode accepted")
	}
}

// With Advertise, the member record publishes the advertised host with each
// listener's port; a gossip bind address without a fixed port is refused.
func TestJoinAdvertise(t *testing.T) {
	e := clustertest.Etcd(t)
	cli := clustertest.Client(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := Submit(ctx, cli, DefaultSpec("adv", "/data")); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	_, grpcPort, _ := net.SplitHostPort(lis.Addr().String())
	gossip := freePort(t)
	cfg := Node{Run: "adv", Etcd: e, MetricsAddr: "0.0.0.0:0", GossipBind: "0.0.0.0:" + gossip, Advertise: "127.0.0.1"}
	me := cluster.Member{ID: "w1", Role: cluster.RoleWorker, Addrs: map[string]string{"grpc": lis.Addr().String()}}
	s, err := Join(ctx, cfg, me)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	self := s.Members.Self()
	if got := self.Addrs["grpc"]; got != "127.0.0.1:"+grpcPort {
		t.Errorf("grpc published as %q, want 127.0.0.1:%s", got, grpcPort)
	}
	if got := self.Addrs[cluster.AddrGossip]; got != "127.0.0.1:"+gossip {
		t.Errorf("gossip published as %q, want 127.0.0.1:%s", got, gossip)
	}
	if h, _, _ := net.SplitHostPort(self.Addrs[AddrMetrics]); h != "127.0.0.1" {
		t.Errorf("metrics published as %q", self.Addrs[AddrMetrics])
	}
	cfg.GossipBind, me.ID = "0.0.0.0:0", "w2"
	if _, err := Join(ctx, cfg, me); err == nil || !strings.Contains(err.Error(), "fixed port") {
		t.Errorf("advertise with a random gossip port: %v", err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

func TestSpecCompression(t *testing.T) {
	for _, tc := range []struct {
		compression string
		topk        float64
		want        wire.Compression
		bad         bool
	}{
		{compression: "", want: wire.Compression{}},
		{compression: "none", topk: 0.3, want: wire.Compression{}},
		{compression: "fp16", want: wire.Compression{Encoding: wire.EncodingFloat16}},
		{compression: "topk", want: wire.Compression{Encoding: wire.EncodingTopK, TopK: wire.DefaultTopK}},
		{compression: "topk", topk: 0.02, want: wire.Compression{Encoding: wire.EncodingTopK, TopK: 0.02}},
		{compression: "topk", topk: 1, want: wire.Compression{Encoding: wire.EncodingTopK, TopK: 1}},
		{compression: "gzip", bad: true},
		{compression: "FP16", bad: true},
		{compression: "topk", topk: 1.5, bad: true},
		{compression: "topk", topk: -0.1, bad: true},
		{compression: "topk", topk: math.NaN(), bad: true},
	} {
		s := DefaultSpec("r", "/data")
		s.Compression, s.TopK = tc.compression, tc.topk
		err := s.Validate()
		if (err != nil) != tc.bad {
			t.Errorf("%q, topk %v: Validate() = %v, want an error: %v", tc.compression, tc.topk, err, tc.bad)
			continue
		}
		if !tc.bad {
			if got := s.WireCompression(); got != tc.want {
				t.Errorf("%q, topk %v: WireCompression() = %+v, want %+v", tc.compression, tc.topk, got, tc.want)
			}
			if err := s.WireCompression().Validate(); err != nil {
				t.Errorf("%q, topk %v: %v", tc.compression, tc.topk, err)
			}
		}
	}
}

// The optimizer's settings sit in the spec's JSON as they always have (the
// top-level keys "adam" and "decay_auto"), so the spec of a run submitted
// by an earlier version reads the same and a resubmission compares equal;
// the parameter servers' Adam has the decay resolved over the epochs.
func TestSpecOptimizer(t *testing.T) {
	s := DefaultSpec("r", "/data")
	s.Epochs = 20
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	if got, want := string(top["adam"]), `{"lr":0.001,"beta1":0.9,"beta2":0.999,"epsilon":1e-7,"decay":0}`; got != want {
		t.Errorf(`"adam": %s, want %s`, got, want)
	}
	if got := string(top["decay_auto"]); got != "true" {
		t.Errorf(`"decay_auto": %s, want true`, got)
	}
	old := `{"run":"r","data":"/data","epochs":20,"adam":{"lr":0.002,"beta1":0.9,"beta2":0.999,"epsilon":1e-7,"decay":0},"decay_auto":true}`
	var o Spec
	if err := json.Unmarshal([]byte(old), &o); err != nil {
		t.Fatal(err)
	}
	want := optim.AdamConfig{LR: 0.002, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7, Decay: 0.002 / 20}
	if got := o.AdamConfig(); got != want {
		t.Errorf("AdamConfig() of an earlier spec: %+v, want %+v", got, want)
	}
	// what the parameter servers read back from etcd
	s.Adam.L2, s.Adam.WeightDecay = 1e-4, 0.01
	b, _ = json.Marshal(s)
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if a := back.AdamConfig(); a.L2 != 1e-4 || a.WeightDecay != 0.01 || a != s.AdamConfig() {
		t.Errorf("spec through JSON: %+v, want %+v", a, s.AdamConfig())
	}
	if !strings.Contains(string(b), `"l2":0.0001,"weight_decay":0.01`) {
		t.Errorf("JSON %s lacks l2 and weight_decay", b)
	}
}

// syncLog is a log sink that a test reads while the code writes.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A member's record says which tailor and wire protocol it runs; a member
// that joins with another wire protocol is named in an error log line by
// the others.
func TestJoinPublishesVersion(t *testing.T) {
	e := clustertest.Etcd(t)
	cli := clustertest.Client(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Submit(ctx, cli, DefaultSpec("ver", "/data")); err != nil {
		t.Fatal(err)
	}
	var logs syncLog
	s, err := Join(ctx, Node{Run: "ver", Etcd: e, Log: slog.New(slog.NewTextHandler(&logs, nil))},
		cluster.Member{ID: "w1", Role: cluster.RoleWorker, Extra: map[string]string{"zone": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)

	var rec cluster.Member
	if _, err := cluster.GetJSON(ctx, cli, s.Keys.Member(cluster.RoleWorker, "w1"), &rec); err != nil {
		t.Fatal(err)
	}
	wantWire := strconv.Itoa(wire.ProtocolVersion)
	if rec.Extra[version.ExtraVersion] != version.Get().String() || rec.Extra[version.ExtraWire] != wantWire || rec.Extra["zone"] != "a" {
		t.Errorf("record's extra %v: want version %q, wire %s and the caller's zone", rec.Extra, version.Get().String(), wantWire)
	}

	// a member of another wire protocol (joined below job.Join, which
	// would publish this one's)
	other, err := cluster.Join(ctx, cluster.MembershipConfig{Client: cli, Keys: s.Keys, FastFailure: true,
		Self: cluster.Member{ID: "w2", Role: cluster.RoleWorker, Extra: map[string]string{version.ExtraWire: "999", version.ExtraVersion: "v9.9.9"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Leave(ctx)
	for !strings.Contains(logs.String(), "another wire protocol") {
		if ctx.Err() != nil {
			t.Fatalf("no error logged for a member of wire protocol 999; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	line := logs.String()
	for _, want := range []string{"level=ERROR", "member=worker/w2", "its_wire_protocol=999", "its_version=v9.9.9", "wire_protocol=" + wantWire} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %q:\n%s", want, line)
		}
	}
	if n := strings.Count(line, "another wire protocol"); n != 1 {
		t.Errorf("%d error lines, want 1:\n%s", n, line)
	}
}

func TestNodeValidate(t *testing.T) {
	ok := Node{Run: "r", Etcd: []string{"127.0.0.1:2379"}}
	for _, c := range []struct {
		name string
		edit func(*Node)
		want string // "" for valid
	}{
		{"minimal", func(*Node) {}, ""},
		{"32-byte key", func(n *Node) { n.SecretKey = make([]byte, 32) }, ""},
		{"no run", func(n *Node) { n.Run = "" }, "no run id"},
		{"no etcd", func(n *Node) { n.Etcd = nil }, "no etcd endpoints"},
		{"short key", func(n *Node) { n.SecretKey = make([]byte, 10) }, "gossip key of 10 bytes"},
	} {
		n := ok
		c.edit(&n)
		err := n.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: Validate() = %v, want %q", c.name, err, c.want)
		}
	}
	if got := (Node{}).ListenAddr(); got != DefaultListen {
		t.Errorf("ListenAddr of no Listen = %q, want %q", got, DefaultListen)
	}
}

func TestModeFlag(t *testing.T) {
	var m Mode
	for _, s := range []string{"sync", "async", "ssp"} {
		if err := m.Set(s); err != nil || m.String() != s {
			t.Errorf("Set(%q): %v, mode %q", s, err, m)
		}
	}
	if err := m.Set("bulk"); err == nil || m != ModeSSP {
		t.Errorf("Set(bulk): %v, mode %q: want an error and the mode unchanged", err, m)
	}
}

// A sync run of a fixed worker set scales the learning rate for its global
// batch as LRScale says (with the decay per epoch and the warm-up); other
// runs keep the given rate, and a spec written before the field (no
// lr_scale) keeps it too.
func TestSpecLRScale(t *testing.T) {
	base := DefaultSpec("r", "/data")
	base.Epochs, base.Batch = 10, 32
	for _, tc := range []struct {
		name          string
		mode          Mode
		workers       int
		scale         string
		warmup        int
		wantK         float64
		wantWarmupLen int
	}{
		{"sqrt, 4 workers", ModeSync, 4, LRScaleSqrt, 0, 2, 0},
		{"linear, 3 workers, warm-up", ModeSync, 3, LRScaleLinear, 50, 3, 50},
		{"none", ModeSync, 3, LRScaleNone, 50, 1, 0},
		{"spec without the field", ModeSync, 3, "", 0, 1, 0},
		{"one worker", ModeSync, 1, LRScaleSqrt, 0, 1, 0},
		{"no fixed worker set", ModeSync, 0, LRScaleSqrt, 0, 1, 0},
		{"async", ModeAsync, 3, LRScaleSqrt, 0, 1, 0},
		{"ssp", ModeSSP, 3, LRScaleLinear, 0, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			s.Mode, s.Workers, s.LRScale, s.WarmupSteps = tc.mode, tc.workers, tc.scale, tc.warmup
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			if k := s.LRFactor(); math.Abs(k-tc.wantK) > 1e-12 {
				t.Fatalf("LRFactor %g, want %g", k, tc.wantK)
			}
			a, one := s.AdamConfig(), s.For(s.Epochs)
			if math.Abs(a.LR-tc.wantK*one.LR) > 1e-15 || a.Warmup != tc.wantWarmupLen {
				t.Fatalf("AdamConfig %+v, want lr %g × %g, warm-up %d", a, tc.wantK, one.LR, tc.wantWarmupLen)
			}
			if tc.wantK == 1 {
				if a != one {
					t.Fatalf("AdamConfig %+v, want the unscaled %+v", a, one)
				}
				return
			}
			// after e epochs (S one-process steps each, S/workers sync steps)
			// the decay has divided the rate as in one process
			const S = 120
			for _, e := range []int64{1, 5, 10} {
				got := a.LRAt(e*S/int64(tc.workers)) / tc.wantK
				want := one.LRAt(e * S)
				if e*S/int64(tc.workers) < int64(a.Warmup) {
					continue
				}
				if math.Abs(got-want) > 1e-12 {
					t.Errorf("epoch %d: rate/k %g, one process's %g", e, got, want)
				}
			}
			if a.Warmup > 0 {
				if got := a.LRAt(0); math.Abs(got-one.LR) > 1e-15 {
					t.Errorf("first warm-up step: rate %g, want the unscaled %g", got, one.LR)
				}
			}
			if !strings.Contains(s.LRSummary(), fmt.Sprintf("%g", a.LR)) {
				t.Errorf("LRSummary %q does not say the rate %g", s.LRSummary(), a.LR)
			}
		})
	}
	bad := base
	bad.LRScale = "quadratic"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "lr scale") {
		t.Errorf("lr scale quadratic: %v, want an error", err)
	}
}

// A sync step of fewer workers than the run was scaled for updates with
// the rate of its own global batch; a full step, or a run without scaling,
// with the run's rate.
func TestSpecStepLRFactor(t *testing.T) {
	s := DefaultSpec("r", "/data")
	s.Workers = 4
	for _, tc := range []struct {
		scale string
		n     int
		want  float64
	}{
		{LRScaleLinear, 4, 1}, {LRScaleLinear, 3, 0.75}, {LRScaleLinear, 2, 0.5}, {LRScaleLinear, 1, 0.25},
		{LRScaleLinear, 5, 1}, {LRScaleLinear, 0, 1},
		{LRScaleSqrt, 1, 0.5}, {LRScaleSqrt, 2, math.Sqrt(2) / 2}, {LRScaleSqrt, 4, 1},
		{LRScaleNone, 1, 1}, {"", 2, 1},
	} {
		s.LRScale = tc.scale
		if got := s.StepLRFactor(tc.n); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("%s, %d of 4 workers: %g, want %g", tc.scale, tc.n, got, tc.want)
		}
	}
	a := s
	a.LRScale, a.Mode = LRScaleLinear, ModeAsync
	if got := a.StepLRFactor(2); got != 1 {
		t.Errorf("async: %g, want 1", got)
	}
}
