package dashboard

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/store"
)

// writeCheckpoint writes a manifest as the leader does, with a validation
// history of epochs epochs whose mAP is 0.1 per epoch.
func writeCheckpoint(t *testing.T, ctx context.Context, loc checkpoint.Location, run, jobID string, step int64, epochs int, created time.Time) {
	t.Helper()
	var vs eval.ValidatorState
	for e := 1; e <= epochs; e++ {
		vs.History = append(vs.History, eval.Epoch{Epoch: e, TrainLoss: 1 / float64(e), Val: eval.Scores{Loss: 0.5, MAP: 0.1 * float64(e)}, LR: 1e-3, ImgPerSec: 50})
	}
	vs.Best = epochs
	m := &checkpoint.Meta{Run: run, JobID: jobID, Step: step, Epochs: epochs, Reason: "epoch", Created: created, Mode: "sync", Labels: []string{"a", "b"}, Best: true,
		Parts: []checkpoint.Blob{{Server: 0, Object: checkpoint.PartObject(0), SHA256: strings.Repeat("ab", 32), Bytes: 1 << 20, Version: step}}}
	var err error
	if m.Spec, err = json.Marshal(job.Spec{Epochs: 9}); err != nil {
		t.Fatal(err)
	}
	m.State = json.RawMessage(`{}`)
	if m.Validator, err = json.Marshal(vs); err != nil {
		t.Fatal(err)
	}
	if err := loc.WriteMeta(ctx, checkpoint.Name(step, epochs), m); err != nil {
		t.Fatal(err)
	}
}

// Runs that etcd no longer has are shown from the checkpoint store: the
// newest job's curves and checkpoints; a run etcd has is shown from etcd.
func TestArchivedRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := clustertest.Client(t, clustertest.Etcd(t))
	fakeRun(t, ctx, cli, "r1", 2, "127.0.0.1:1")
	st, err := store.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	loc := checkpoint.Location{Store: st, Prefix: "checkpoints/"}
	t0 := time.Now().UTC().Add(-time.Hour)
	// run "old": job j1 went to step 90, then a new submission j2 to step 30
	writeCheckpoint(t, ctx, loc, "old", "j1", 60, 2, t0)
	writeCheckpoint(t, ctx, loc, "old", "j1", 90, 3, t0.Add(time.Minute))
	writeCheckpoint(t, ctx, loc, "old", "j2", 15, 1, t0.Add(10*time.Minute))
	writeCheckpoint(t, ctx, loc, "old", "j2", 30, 4, t0.Add(11*time.Minute))
	writeCheckpoint(t, ctx, loc, "r1", "jx", 5, 1, t0) // in etcd: shown from etcd

	cfg := DefaultConfig()
	cfg.Etcd, cfg.Checkpoints = cli, &loc
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	code, js, _ := get(t, ts.Client(), ts.URL+"/api/runs")
	var runs []RunSummary
	if err := json.Unmarshal([]byte(js), &runs); code != 200 || err != nil || len(runs) != 2 {
		t.Fatalf("/api/runs: %d %v %s", code, err, js)
	}
	byRun := map[string]RunSummary{}
	for _, r := range runs {
		byRun[r.Run] = r
	}
	if o := byRun["old"]; o.State != StateArchived || o.Step != 30 || o.Epoch != 4 || o.Epochs != 9 || o.BestEpoch != 4 || o.BestMAP != 0.4 {
		t.Errorf("the archived run: %+v; want job j2's newest: step 30, 4 of 9 epochs, best mAP 0.4 at epoch 4", o)
	}
	if r := byRun["r1"]; r.State != "running" || r.BestEpoch != 2 {
		t.Errorf("the run in etcd: %+v; want it from etcd (running, best at epoch 2)", r)
	}
	code, body, _ := get(t, ts.Client(), ts.URL+"/run/old")
	if code != 200 {
		t.Fatalf("/run/old: %d\n%s", code, body)
	}
	for _, want := range []string{"finished (checkpoints)", "000000000030-000004", "000000000015-000001", "1.0 MiB", "etcd pointer: <b>000000000030-000004</b>"} {
		if !strings.Contains(body, want) {
			t.Errorf("/run/old lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "000000000090-000003") {
		t.Errorf("/run/old shows the older job's checkpoints:\n%s", body)
	}
	if i := strings.Index(body, `id="chart-map"`); i < 0 || strings.Count(body[i:i+strings.Index(body[i:], "</svg>")], "<circle") != 4 {
		t.Errorf("the archived run's mAP chart has not 4 points:\n%s", body)
	}
	if code, body, _ := get(t, ts.Client(), ts.URL+"/compare?a=r1&b=old"); code != 200 || !strings.Contains(body, `id="chart-map-b"`) || !strings.Contains(body, "0.4000 (epoch 4)") {
		t.Errorf("/compare?a=r1&b=old: %d\n%s", code, body)
	}
	if code, _, _ := get(t, ts.Client(), ts.URL+"/run/nowhere"); code != 404 {
		t.Errorf("/run/nowhere: %d, want 404", code)
	}
}
