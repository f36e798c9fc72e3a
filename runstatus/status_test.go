package runstatus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/wire"
)

// testRun is a run's keys in a throwaway etcd, written by hand.
type testRun struct {
	t    *testing.T
	ctx  context.Context
	cli  *clientv3.Client
	run  string
	keys cluster.Keys
}

func newTestRun(t *testing.T, ctx context.Context, run string) *testRun {
	t.Helper()
	return &testRun{t: t, ctx: ctx, cli: clustertest.Client(t, clustertest.Etcd(t)), run: run, keys: cluster.RunKeys(run)}
}

// put writes v as JSON at key.
func (r *testRun) put(key string, v any) {
	r.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.cli.Put(r.ctx, key, string(b)); err != nil {
		r.t.Fatal(err)
	}
}

// lead makes coord the run's leader until the test ends.
func (r *testRun) lead(coord cluster.Member) {
	r.t.Helper()
	elect, err := cluster.NewElection(cluster.ElectionConfig{Client: r.cli, Keys: r.keys, Self: coord})
	if err != nil {
		r.t.Fatal(err)
	}
	term, err := elect.Campaign(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = term.Resign(context.Background()) })
}

// status collects the run (within 3 s) and returns the view, its text and
// its JSON.
func (r *testRun) status() (View, string, string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 3*time.Second)
	defer cancel()
	v, err := Collect(ctx, r.cli, r.run, Options{})
	if err != nil {
		r.t.Fatalf("Collect: %v", err)
	}
	var text bytes.Buffer
	v.WriteText(&text)
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		r.t.Fatal(err)
	}
	return v, text.String(), string(b)
}

// TestStatusFromEtcd writes a run's keys by hand (spec, leader, members,
// progress, status) and checks what Collect makes of them: the text and
// JSON views, a worker's scraped metrics, an unreachable parameter server
// reported as such, and no secret from the spec in the output.
func TestStatusFromEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newTestRun(t, ctx, "r1")

	// no run yet
	if _, err := Collect(ctx, r.cli, "r1", Options{}); !errors.Is(err, ErrNotSubmitted) || !strings.Contains(err.Error(), `run "r1": not submitted`) {
		t.Errorf("status of a missing run: %v; want ErrNotSubmitted, 'run \"r1\": not submitted'", err)
	}

	const secret = "SEKRIT-do-not-show"
	spec := job.DefaultSpec("r1", "s3://user:"+secret+"@bucket/ds?endpoint=h:9000&secret_key="+secret)
	spec.Epochs, spec.Batch, spec.ParamServers = 3, 8, 2
	r.put(r.keys.Spec(), spec)

	v, out, _ := r.status()
	if v.State != StateWaiting || !strings.Contains(out, "run r1: waiting for a coordinator") || !strings.Contains(out, "progress  none yet") {
		t.Errorf("status of a submitted run: state %q\n%s", v.State, out)
	}

	// a worker whose /metrics answers, a parameter server that does not
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# HELP tailor_worker_steps_total Steps trained.\n# TYPE tailor_worker_steps_total counter\n"+
			"tailor_worker_steps_total 17\ntailor_worker_images_total 136\ntailor_worker_loss 0.5321\n"+
			"tailor_worker_step_seconds_bucket{le=\"0.01\"} 3\ntailor_worker_input_stall_seconds 0.25\n")
	}))
	defer metrics.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()
	workerAddr := strings.TrimPrefix(metrics.URL, "http://")
	r.put(r.keys.Member(cluster.RoleWorker, "w0"), memberRecord{Member: cluster.Member{ID: "w0", Role: cluster.RoleWorker,
		Addrs: map[string]string{"metrics": workerAddr, "gossip": "127.0.0.1:7001"}, Extra: map[string]string{"token": secret, "version": "v0.9.0", "wire": "1"}},
		Node: "worker/w0/x"})
	// the parameter server runs a tailor from before versions were published
	r.put(r.keys.Member(cluster.RoleParamServer, "ps0"), memberRecord{Member: cluster.Member{ID: "ps0", Role: cluster.RoleParamServer,
		Addrs: map[string]string{"grpc": deadAddr}}, Node: "paramserver/ps0/x"})
	coord := cluster.Member{ID: "coord-a", Role: cluster.RoleCoordinator, Addrs: map[string]string{"grpc": "127.0.0.1:7100", "metrics": "127.0.0.1:7101"},
		Extra: map[string]string{"version": "(devel) 1162adf (modified)", "wire": "1"}}
	r.put(r.keys.Member(cluster.RoleCoordinator, "coord-a"), memberRecord{Member: coord, Node: "coordinator/coord-a/x"})
	r.lead(coord)
	r.put(r.keys.TrainProgress(), coordinator.Progress{Leader: "coord-a", Mode: "sync", Epoch: 2, Epochs: 3, Step: 41, Loss: 0.51, EpochLoss: 0.55,
		Images: 320, ImgPerSec: 81.5, EpochImgPerSec: 77.25, Workers: 1, ValEpoch: 1, ValLoss: 0.4567, ValMAP: 0.3456, Updated: time.Now().UTC()})

	v, out, js := r.status()
	for _, want := range []string{
		"run r1: running, leader coord-a",
		"sync, 3 epochs, batch 8 per worker, 2 parameter servers",
		"epoch 2/3, step 41, loss 0.5100 (epoch mean 0.5500), 81.5 img/s",
		"val       epoch 1: loss 0.4567, mAP 0.3456",
		"coord-a (leader)", "127.0.0.1:7101", workerAddr,
		"paramserver ps0:", // not answering: named under "not shown"
		"0.5321",
		"VERSION", "WIRE", "(devel) 1162adf (modified)  1", "v0.9.0", // each member's tailor and wire protocol
		"members speak different wire protocols and refuse each other's calls (1: coordinator/coord-a, worker/w0; none: paramserver/ps0)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) {
		t.Errorf("status shows a secret:\n%s", out)
	}
	t.Logf("status:\n%s", out)
	if strings.Contains(js, secret) {
		t.Errorf("status --json shows a secret:\n%s", js)
	}
	if v.State != StateRunning || v.Leader != "coord-a" || len(v.Members) != 3 || v.Progress == nil || v.Progress.Step != 41 {
		t.Errorf("state %q, leader %q, %d members, progress %+v; want running, coord-a, 3, step 41", v.State, v.Leader, len(v.Members), v.Progress)
	}
	if len(v.Members) == 3 {
		if got := v.Members[2]; got.ID != "w0" || got.Worker == nil || got.Worker.Steps != 17 || got.Worker.Images != 136 || got.Worker.InputStall != 0.25 {
			t.Errorf("worker w0 = %+v (worker %+v); want 17 steps, 136 images, 0.25 s stalled", got, got.Worker)
		}
		if got := v.Members[0]; got.ID != "coord-a" || !got.Leader || got.Addrs["metrics"] != "127.0.0.1:7101" ||
			got.Version != "(devel) 1162adf (modified)" || got.Wire != "1" {
			t.Errorf("coordinator = %+v; want coord-a, leader, metrics 127.0.0.1:7101, its version and wire protocol 1", got)
		}
		if got := v.Members[1]; got.Version != "" || got.Wire != "" || got.PS != nil {
			t.Errorf("paramserver of no published version, not answering = %+v", got)
		}
	}
	var back View
	if err := json.Unmarshal([]byte(js), &back); err != nil {
		t.Fatalf("the JSON view: %v\n%s", err, js)
	}
	if back.State != v.State || len(back.Members) != len(v.Members) || back.Spec != v.Spec {
		t.Errorf("the JSON view read back: %+v, want %+v", back, v)
	}

	// the run's end
	r.put(r.keys.Status(), coordinator.RunStatus{State: "done", Model: "/out/r1/model.tailor", Finished: time.Now().UTC()})
	v, out, _ = r.status()
	if v.State != StateDone || v.Finished == nil || !strings.Contains(out, "run r1: done at") || !strings.Contains(out, "/out/r1/model.tailor") {
		t.Errorf("status of a finished run: state %q\n%s", v.State, out)
	}
}

// A parameter server that answers the wire Status call shows with its
// counters, the rejected pushes summed and by reason.
func TestStatusParamServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newTestRun(t, ctx, "r3")
	r.put(r.keys.Spec(), job.DefaultSpec("r3", "/data"))
	reply := &wire.StatusReply{Initialised: true, Mode: "sync", Version: 12, Step: 11, Members: 2, Pending: 1, BytesIn: 3 << 20, BytesOut: 5 << 10,
		Accepted: 22, Steps: 11, Missing: 1,
		Rejected: []wire.ReasonCount{{Reason: "late", Count: 2}, {Reason: "stale", Count: 1}, {Reason: "late", Count: 1}, {Reason: "none", Count: 0}}}
	addr := statusServer(t, reply)
	r.put(r.keys.Member(cluster.RoleParamServer, "ps0"), memberRecord{Member: cluster.Member{ID: "ps0", Role: cluster.RoleParamServer,
		Addrs: map[string]string{"grpc": addr}}})

	v, out, js := r.status()
	if len(v.Members) != 1 || v.Members[0].PS == nil {
		t.Fatalf("members %+v, problems %q; want ps0 with its numbers", v.Members, v.Problems)
	}
	want := ParamServer{Initialised: true, Mode: "sync", Version: 12, Step: 11, Workers: 2, Pending: 1, BytesIn: 3 << 20, BytesOut: 5 << 10,
		Accepted: 22, Rejected: 4, RejectedBy: map[string]uint64{"late": 3, "stale": 1}, Updates: 11, Missing: 1}
	if got := *v.Members[0].PS; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("paramserver = %+v, want %+v", got, want)
	}
	for _, w := range []string{"parameter servers", "3.0 MiB", "5.0 KiB", "ps0 rejected: late 3, stale 1"} {
		if !strings.Contains(out, w) {
			t.Errorf("status lacks %q:\n%s", w, out)
		}
	}
	if !strings.Contains(js, `"pushes_rejected": 4`) || !strings.Contains(js, `"rejected_by": {`) {
		t.Errorf("the JSON view lacks the rejections:\n%s", js)
	}
}

// statusOnly is a parameter server that answers Status only.
type statusOnly struct {
	wire.Handler // nil: the other calls are not made
	reply        *wire.StatusReply
}

func (s statusOnly) Status(ctx context.Context, req *wire.StatusRequest) (*wire.StatusReply, error) {
	return s.reply, nil
}

// statusServer serves the wire Status call with reply on a free port of
// 127.0.0.1 until the test ends, and returns its address.
func statusServer(t *testing.T, reply *wire.StatusReply) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(wire.ServerOptions(nil, "")...)
	wire.Register(srv, statusOnly{reply: reply})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestRedactLocation(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/data/shards", "/data/shards"},
		{"s3://b/p?endpoint=h%3A9000&tls=false", "s3://b/p?endpoint=h%3A9000&tls=false"},
		{"s3://u:pw@b/p", "s3://REDACTED@b/p"},
		{"s3://b/p?secret_key=x&region=r", "s3://b/p?region=r&secret_key=REDACTED"},
		{"s3://b/p?X-Amz-Signature=abc", "s3://b/p?X-Amz-Signature=REDACTED"},
		{"s3://b/p?credentials_file=%2Fetc%2Fc", "s3://b/p?credentials_file=%2Fetc%2Fc"},
	} {
		if got := RedactLocation(tt.in); got != tt.want {
			t.Errorf("RedactLocation(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// parseMetrics takes the unlabelled samples, with or without a timestamp,
// and skips comments, labelled series and what is not a number.
func TestParseMetrics(t *testing.T) {
	got, err := parseMetrics(strings.NewReader("# HELP a x\n# TYPE a counter\na 1\nb{le=\"1\"} 2\nc 3.5 1700000000000\n\nd NaN\ne x\nf\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["a"] != 1 || got["c"] != 3.5 || !math.IsNaN(got["d"]) {
		t.Errorf("parseMetrics = %v, want a 1, c 3.5, d NaN", got)
	}
}

// The JSON names of a View are `tailor status --json`'s interface.
func TestViewJSONNames(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	v := View{Run: "r", At: now, State: StateDone, Finished: &now, Model: "m", Leader: "c", Progress: &coordinator.Progress{},
		ProgressAge: 1, ProgressStale: true, Problems: []string{"p"},
		Spec: Spec{Mode: "ssp", Epochs: 1, Batch: 1, ParamServers: 1, Quorum: 1, Staleness: 1, Shuffle: "units", UnitSize: 1, Seed: 1, Data: "d", Out: "o"},
		Members: []Member{{Role: cluster.RoleWorker, ID: "w", Rank: 1, Addrs: map[string]string{}, Version: "v", Wire: "1", Leader: true,
			PS:     &ParamServer{RejectedBy: map[string]uint64{"late": 1}},
			Worker: &Worker{}}}}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]json.RawMessage) []string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	sub := func(raw json.RawMessage) map[string]json.RawMessage {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		return m
	}
	var members []json.RawMessage
	if err := json.Unmarshal(m["members"], &members); err != nil {
		t.Fatal(err)
	}
	member := sub(members[0])
	for _, c := range []struct {
		what string
		got  []string
		want string
	}{
		{"view", keys(m), "at finished leader members model problems progress progress_age_s progress_stale run spec state"},
		{"spec", keys(sub(m["spec"])), "batch data epochs mode out param_servers quorum seed shuffle staleness unit_size"},
		{"member", keys(member), "addrs id leader paramserver rank role version wire_protocol worker"},
		{"paramserver", keys(sub(member["paramserver"])), "bytes_in bytes_out initialised missing mode pending pushes_accepted pushes_rejected rejected_by step updates version workers"},
		{"worker", keys(sub(member["worker"])), "compute_s images input_stall_s loss pull_s push_s steps"},
	} {
		if got := strings.Join(c.got, " "); got != c.want {
			t.Errorf("the %s's JSON names: %s\nwant %s", c.what, got, c.want)
		}
	}
}

// TestStatusStalled writes the progress record of a leader whose watchdog
// reports a stall, and then one the leader stopped writing long ago: the
// first shows as "stalled for N s, waiting for ..." (state stalled, in
// text and JSON), the second as stale, with the run still running.
func TestStatusStalled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newTestRun(t, ctx, "r2")
	r.put(r.keys.Spec(), job.DefaultSpec("r2", "/data"))
	r.lead(cluster.Member{ID: "coord-a", Role: cluster.RoleCoordinator, Addrs: map[string]string{"grpc": "127.0.0.1:7100"}})
	last := time.Now().Add(-70 * time.Second).UTC()
	stalled := coordinator.Progress{Leader: "coord-a", Mode: "sync", Epoch: 3, Epochs: 10, Step: 2600, Workers: 3, Phase: "training",
		LastStep: last, StalledFor: 61, WaitingFor: "step 2600: the gradients of w1, w2 (no server has them)",
		WaitingWorkers: []string{"w1", "w2"}, WaitingServers: []string{"ps0", "ps1"}, StallActions: 1, Interval: 2, Updated: time.Now().UTC()}
	r.put(r.keys.TrainProgress(), stalled)

	v, out, js := r.status()
	for _, want := range []string{"run r2: STALLED, leader coord-a", "STALLED   stalled for 6", "s, waiting for step 2600: the gradients of w1, w2 (no server has them)",
		"1 watchdog action taken", "last progress at " + last.Local().Format("15:04:05")} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "STALE ") {
		t.Errorf("a fresh record shown as stale:\n%s", out)
	}
	if v.State != StateStalled || v.ProgressStale || v.Progress == nil || v.Progress.StalledFor != 61 || !strings.Contains(v.Progress.WaitingFor, "w1, w2") {
		t.Errorf("state %q, stale %v, progress %+v; want stalled, fresh, stalled 61 s waiting for w1, w2", v.State, v.ProgressStale, v.Progress)
	}
	if !strings.Contains(js, `"stalled_s": 61`) || !strings.Contains(js, `"waiting_workers": [`) {
		t.Errorf("the JSON view lacks the stall's fields:\n%s", js)
	}

	// the leader stopped writing a minute ago: stale, not "stalled"
	stale := coordinator.Progress{Leader: "coord-a", Mode: "sync", Epoch: 3, Epochs: 10, Step: 2700, Workers: 3, Phase: "training",
		Interval: 2, Updated: time.Now().Add(-time.Minute).UTC()}
	r.put(r.keys.TrainProgress(), stale)
	v, out, _ = r.status()
	for _, want := range []string{"run r2: running, leader coord-a", "STALE     the leader's progress record is 1m0s old (written every 2s): coord-a is dead, hung or cut off from etcd"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if v.State != StateRunning || !v.ProgressStale {
		t.Errorf("state %q, stale %v; want running, stale", v.State, v.ProgressStale)
	}
	if strings.Contains(out, "stalled for") {
		t.Errorf("a record without a stall shows one:\n%s", out)
	}
	// a stalled record gone stale says how old its figure is, and the
	// state is not claimed stalled
	stalled.Updated = time.Now().Add(-time.Minute).UTC()
	r.put(r.keys.TrainProgress(), stalled)
	if _, out, _ = r.status(); !strings.Contains(out, "stalled for 61 s (as of 1m0s ago)") || !strings.Contains(out, "run r2: running") {
		t.Errorf("a stale stalled record:\n%s", out)
	}
	t.Logf("status:\n%s", out)
}

func TestStaleProgress(t *testing.T) {
	for _, c := range []struct {
		interval, age float64
		want          bool
	}{
		{2, 9, false}, {2, 11, true}, // 10 s at least
		{5, 14, false}, {5, 16, true}, // three intervals
		{0, 3*coordinator.ProgressInterval.Seconds() + 11, true}, // the default interval
		{0, 5, false},
	} {
		if got := staleProgress(coordinator.Progress{Interval: c.interval}, c.age); got != c.want {
			t.Errorf("staleProgress(interval %v, age %v) = %v, want %v", c.interval, c.age, got, c.want)
		}
	}
}
