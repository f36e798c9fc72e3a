package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
)

// TestStatusFromEtcd writes a run's keys by hand (spec, leader, members,
// progress, status) and checks what tailor status makes of them: the text
// and JSON views, a worker's scraped metrics, an unreachable parameter
// server reported as such, and no secret from the spec in the output.
func TestStatusFromEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{FastTicks: true, UnsafeNoFsync: true, LogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := cluster.NewClient(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	etcd := e.Endpoints()[0]
	status := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := RunContext(ctx, append([]string{"status", "--etcd", etcd, "--timeout", "3s"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}

	// no run yet
	if code, _, errs := status("--run", "r1"); code != 1 || !strings.Contains(errs, `run "r1": not submitted`) {
		t.Errorf("status of a missing run: exit %d, stderr %q; want 1 and 'not submitted'", code, errs)
	}

	const secret = "SEKRIT-do-not-show"
	spec := job.DefaultSpec("r1", "s3://user:"+secret+"@bucket/ds?endpoint=h:9000&secret_key="+secret)
	spec.Epochs, spec.Batch, spec.ParamServers = 3, 8, 2
	put := func(key string, v any) {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, key, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	keys := cluster.RunKeys("r1")
	put(keys.Spec(), spec)

	code, out, errs := status("--run", "r1")
	if code != 0 || !strings.Contains(out, "run r1: waiting for a coordinator") || !strings.Contains(out, "progress  none yet") {
		t.Errorf("status of a submitted run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
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
	put(keys.Member(cluster.RoleWorker, "w0"), memberRecord{Member: cluster.Member{ID: "w0", Role: cluster.RoleWorker,
		Addrs: map[string]string{"metrics": workerAddr, "gossip": "127.0.0.1:7001"}, Extra: map[string]string{"token": secret, "version": "v0.9.0", "wire": "1"}},
		Node: "worker/w0/x"})
	put(keys.Member(cluster.RoleParamServer, "ps0"), memberRecord{Member: cluster.Member{ID: "ps0", Role: cluster.RoleParamServer,
		Addrs: map[string]string{"grpc": deadAddr}}, Node: "paramserver/ps0/x"})
	// the parameter server runs a tailor from before versions were published
	coord := cluster.Member{ID: "coord-a", Role: cluster.RoleCoordinator, Addrs: map[string]string{"grpc": "127.0.0.1:7100", "metrics": "127.0.0.1:7101"},
		Extra: map[string]string{"version": "(devel) 1162adf (modified)", "wire": "1"}}
	put(keys.Member(cluster.RoleCoordinator, "coord-a"), memberRecord{Member: coord, Node: "coordinator/coord-a/x"})
	elect, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys, Self: coord})
	if err != nil {
		t.Fatal(err)
	}
	term, err := elect.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Resign(context.WithoutCancel(ctx))
	put(keys.TrainProgress(), coordinator.Progress{Leader: "coord-a", Mode: "sync", Epoch: 2, Epochs: 3, Step: 41, Loss: 0.51, EpochLoss: 0.55,
		Images: 320, ImgPerSec: 81.5, EpochImgPerSec: 77.25, Workers: 1, Updated: time.Now().UTC()})

	code, out, errs = status("--run", "r1")
	if code != 0 {
		t.Fatalf("status: exit %d\nstderr:\n%s", code, errs)
	}
	for _, want := range []string{
		"run r1: running, leader coord-a",
		"sync, 3 epochs, batch 8 per worker, 2 parameter servers",
		"epoch 2/3, step 41, loss 0.5100 (epoch mean 0.5500), 81.5 img/s",
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
	if strings.Contains(out+errs, secret) {
		t.Errorf("status shows a secret:\n%s%s", out, errs)
	}

	t.Logf("status:\n%s", out)
	code, out, errs = status("--run", "r1", "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d\nstderr:\n%s", code, errs)
	}
	if strings.Contains(out, secret) {
		t.Errorf("status --json shows a secret:\n%s", out)
	}
	var v runStatusView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if v.State != stateRunning || v.Leader != "coord-a" || len(v.Members) != 3 || v.Progress == nil || v.Progress.Step != 41 {
		t.Errorf("status --json: state %q, leader %q, %d members, progress %+v; want running, coord-a, 3, step 41", v.State, v.Leader, len(v.Members), v.Progress)
	}
	if len(v.Members) == 3 {
		if got := v.Members[2]; got.ID != "w0" || got.Worker == nil || got.Worker.Steps != 17 || got.Worker.Images != 136 {
			t.Errorf("worker w0 = %+v (worker %+v); want 17 steps, 136 images", got, got.Worker)
		}
		if got := v.Members[0]; got.ID != "coord-a" || !got.Leader || got.Addrs["metrics"] != "127.0.0.1:7101" ||
			got.Version != "(devel) 1162adf (modified)" || got.Wire != "1" {
			t.Errorf("coordinator = %+v; want coord-a, leader, metrics 127.0.0.1:7101, its version and wire protocol 1", got)
		}
		if got := v.Members[1]; got.Version != "" || got.Wire != "" {
			t.Errorf("paramserver of no published version = %+v", got)
		}
	}

	// the run's end, and --watch stops there
	put(keys.Status(), coordinator.RunStatus{State: "done", Model: "/out/r1/model.tailor", Finished: time.Now().UTC()})
	code, out, errs = status("--run", "r1", "--watch", "100ms")
	if code != 0 || !strings.Contains(out, "run r1: done at") || !strings.Contains(out, "/out/r1/model.tailor") {
		t.Errorf("status --watch of a finished run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	_, _ = cli.Delete(ctx, keys.Prefix(), clientv3.WithPrefix())
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
		if got := redactLocation(tt.in); got != tt.want {
			t.Errorf("redactLocation(%q) = %q, want %q", tt.in, got, tt.want)
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
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{FastTicks: true, UnsafeNoFsync: true, LogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := cluster.NewClient(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	status := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := RunContext(ctx, append([]string{"status", "--etcd", e.Endpoints()[0], "--run", "r2", "--timeout", "3s"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	put := func(key string, v any) {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, key, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	keys := cluster.RunKeys("r2")
	put(keys.Spec(), job.DefaultSpec("r2", "/data"))
	coord := cluster.Member{ID: "coord-a", Role: cluster.RoleCoordinator, Addrs: map[string]string{"grpc": "127.0.0.1:7100"}}
	elect, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys, Self: coord})
	if err != nil {
		t.Fatal(err)
	}
	term, err := elect.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Resign(context.WithoutCancel(ctx))
	last := time.Now().Add(-70 * time.Second).UTC()
	stalled := coordinator.Progress{Leader: "coord-a", Mode: "sync", Epoch: 3, Epochs: 10, Step: 2600, Workers: 3, Phase: "training",
		LastStep: last, StalledFor: 61, WaitingFor: "step 2600: the gradients of w1, w2 (no server has them)",
		WaitingWorkers: []string{"w1", "w2"}, WaitingServers: []string{"ps0", "ps1"}, StallActions: 1, Interval: 2, Updated: time.Now().UTC()}
	put(keys.TrainProgress(), stalled)

	code, out, errs := status()
	if code != 0 {
		t.Fatalf("status: exit %d\nstderr:\n%s", code, errs)
	}
	for _, want := range []string{"run r2: STALLED, leader coord-a", "STALLED   stalled for 6", "s, waiting for step 2600: the gradients of w1, w2 (no server has them)",
		"1 watchdog action taken", "last progress at " + last.Local().Format("15:04:05")} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "STALE ") {
		t.Errorf("a fresh record shown as stale:\n%s", out)
	}
	code, out, errs = status("--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d\nstderr:\n%s", code, errs)
	}
	var v runStatusView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if v.State != stateStalled || v.ProgressStale || v.Progress == nil || v.Progress.StalledFor != 61 || !strings.Contains(v.Progress.WaitingFor, "w1, w2") {
		t.Errorf("status --json: state %q, stale %v, progress %+v; want stalled, fresh, stalled 61 s waiting for w1, w2", v.State, v.ProgressStale, v.Progress)
	}
	if !strings.Contains(out, `"stalled_s": 61`) || !strings.Contains(out, `"waiting_workers": [`) {
		t.Errorf("status --json lacks the stall's fields:\n%s", out)
	}

	// the leader stopped writing a minute ago: stale, not "stalled"
	stale := coordinator.Progress{Leader: "coord-a", Mode: "sync", Epoch: 3, Epochs: 10, Step: 2700, Workers: 3, Phase: "training",
		Interval: 2, Updated: time.Now().Add(-time.Minute).UTC()}
	put(keys.TrainProgress(), stale)
	code, out, errs = status()
	if code != 0 {
		t.Fatalf("status: exit %d\nstderr:\n%s", code, errs)
	}
	for _, want := range []string{"run r2: running, leader coord-a", "STALE     the leader's progress record is 1m0s old (written every 2s): coord-a is dead, hung or cut off from etcd"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "stalled for") {
		t.Errorf("a record without a stall shows one:\n%s", out)
	}
	// a stalled record gone stale says how old its figure is, and the
	// state is not claimed stalled
	stalled.Updated = time.Now().Add(-time.Minute).UTC()
	put(keys.TrainProgress(), stalled)
	if _, out, _ = status(); !strings.Contains(out, "stalled for 61 s (as of 1m0s ago)") || !strings.Contains(out, "run r2: running") {
		t.Errorf("a stale stalled record:\n%s", out)
	}
	t.Logf("status:\n%s", out)
}
