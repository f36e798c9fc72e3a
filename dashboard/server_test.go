package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
	"github.com/tailorml/tailor/internal/job"
)

const secret = "SEKRIT-do-not-show"

// memberRecord is a members/<role>/<id> value as cluster.Join writes it.
type memberRecord struct {
	cluster.Member
	Node string `json:"node"`
}

// fakeRun writes a run's keys into etcd as its processes would: the spec
// (with a secret in its data URL), a leader, members (the worker's under a
// lease, its /metrics served by a test server), the progress record, the
// journal and the checkpoint pointer.
func fakeRun(t *testing.T, ctx context.Context, cli *clientv3.Client, run string, epochs int, workerMetrics string) {
	t.Helper()
	keys := cluster.RunKeys(run)
	put := func(key string, v any, opts ...clientv3.OpOption) {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, key, string(b), opts...); err != nil {
			t.Fatal(err)
		}
	}
	spec := job.DefaultSpec(run, "s3://user:"+secret+"@bucket/ds?endpoint=h:9000&secret_key="+secret)
	spec.Epochs = 10
	put(keys.Spec(), spec)
	coord := cluster.Member{ID: "coord-a", Role: cluster.RoleCoordinator, Addrs: map[string]string{"grpc": "127.0.0.1:7100"}}
	put(keys.Member(cluster.RoleCoordinator, "coord-a"), memberRecord{Member: coord, Node: "coordinator/coord-a/x"})
	elect, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys, Self: coord})
	if err != nil {
		t.Fatal(err)
	}
	term, err := elect.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = term.Resign(context.Background()) })
	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	put(keys.Member(cluster.RoleWorker, "w0"), memberRecord{Member: cluster.Member{ID: "w0", Role: cluster.RoleWorker,
		Addrs: map[string]string{"metrics": workerMetrics}, Extra: map[string]string{"token": secret}}, Node: "worker/w0/x"}, clientv3.WithLease(lease.ID))
	now := time.Now().UTC()
	put(keys.TrainProgress(), coordinator.Progress{Leader: "coord-a", Mode: "sync", Epoch: epochs + 1, Epochs: 10, Step: 41, Loss: 0.51,
		Images: 50, EpochImages: 100, EpochImgPerSec: 10, ImgPerSec: 12, Updated: now,
		Contacts: []coordinator.Contact{{Role: "worker", ID: "w0", Live: true, LastAck: now.Add(-1500 * time.Millisecond), RTTms: 0.4}}})
	var h coordinator.History
	for e := 1; e <= epochs; e++ {
		h.Epochs = append(h.Epochs, coordinator.EpochRecord{Epoch: e, TrainLoss: 1 / float64(e), ValLoss: 1.1 / float64(e), ValMAP: 0.1 * float64(e), LR: 1e-3, ImgPerSec: 100})
	}
	ap := 0.875
	h.Eval = &coordinator.EvalRecord{Epoch: epochs, Labels: []coordinator.LabelScore{{Label: "dress", AP: &ap, F1: 0.75, Support: 12}, {Label: "sandal", F1: 0, Support: 0}}}
	h.Checkpoints = []coordinator.CheckpointRecord{{Name: checkpoint.Name(40, epochs), Reason: "epoch", Step: 40, Epochs: epochs, Best: true, Created: now, Seconds: 0.25, Bytes: 3 << 20}}
	put(keys.History(), h)
	put(keys.Events(), coordinator.EventLog{Events: []coordinator.Event{
		{Seq: 1, At: now.Add(-time.Minute), Kind: coordinator.EventElected, Role: "coordinator", Member: "coord-a", Detail: "leads the run", Leader: "coord-a"},
		{Seq: 2, At: now.Add(-3 * time.Second), Kind: coordinator.EventLost, Role: "worker", Member: "w1", By: coordinator.ByGossip, Detail: "gossip declared it dead", Leader: "coord-a"},
	}})
	put(keys.Checkpoint(), checkpoint.Pointer{JobID: "j1", Name: checkpoint.Name(40, epochs), Step: 40, Epochs: epochs, Created: now})
}

func get(t *testing.T, c *http.Client, u string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// The pages and the JSON of runs written into a real etcd: every section
// of the run page, the runs table, the comparison, and no secret anywhere.
func TestServerPages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := clustertest.Client(t, clustertest.Etcd(t))
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "tailor_worker_steps_total 17\ntailor_worker_images_total 136\ntailor_worker_loss 0.5\n"+
			"tailor_worker_compute_seconds 6\ntailor_worker_push_seconds 2\ntailor_worker_pull_seconds 1.5\ntailor_worker_input_stall_seconds 0.5\n")
	}))
	defer metrics.Close()
	fakeRun(t, ctx, cli, "r1", 3, strings.TrimPrefix(metrics.URL, "http://"))
	fakeRun(t, ctx, cli, "r/2", 5, strings.TrimPrefix(metrics.URL, "http://"))

	cfg := DefaultConfig()
	cfg.Etcd = cli
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	hc := ts.Client()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	for _, c := range []struct {
		path string
		code int
		want []string
	}{
		{"/", 200, []string{`href="/run/r1"`, `href="/run/r%2F2"`, "0.5000 (epoch 5)", "0.3000 (epoch 3)", "running", `data-live="/runs"`}},
		{"/runs", 200, []string{`id="runs"`, "r1"}},
		{"/run/r1", 200, []string{
			`data-live="/run/r1/live"`, `src="/static/dashboard.js"`,
			`id="chart-loss"`, `id="chart-map"`, `id="chart-imgs"`, `id="chart-lr"`,
			`data-role="worker" data-id="w0" data-state="live"`, "1.5 s", // w0's gossip contact
			"compute 60%", "push 20%", "pull/wait 15%", "input 5%",
			`data-role="worker" data-id="w1" data-state="lost"`, "by gossip",
			"0000000040-000003", `class="badge best"`, "3.0 MiB", "etcd pointer: <b>000000000040-000003</b>",
			`data-kind="elected"`, "leads the run", `data-kind="lost"`, "gossip declared it dead",
			"dress", "0.875", "0.750", "sandal", "ETA <b id=\"eta\">",
		}},
		{"/run/r1/live", 200, []string{`id="summary"`, `id="members"`, `id="events"`}},
		{"/run/nope", 404, []string{"not submitted"}},
		{"/compare?a=r1&b=" + url.QueryEscape("r/2"), 200, []string{`id="chart-map-a"`, `id="chart-map-b"`, "0.5000 (epoch 5)"}},
		{"/static/dashboard.css", 200, []string{"svg .line"}},
		{"/static/dashboard.js", 200, []string{"data-live"}},
		{"/healthz", 200, []string{"ok"}},
	} {
		code, body, _ := get(t, hc, ts.URL+c.path)
		if code != c.code {
			t.Errorf("GET %s: %d, want %d\n%s", c.path, code, c.code, body)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s lacks %q:\n%s", c.path, w, body)
			}
		}
		if strings.Contains(body, secret) {
			t.Errorf("GET %s shows a secret:\n%s", c.path, body)
		}
	}
	// the run page's charts: one point per epoch and series
	_, body, _ := get(t, hc, ts.URL+"/run/r1")
	if i := strings.Index(body, `id="chart-map"`); i < 0 || strings.Count(body[i:i+strings.Index(body[i:], "</svg>")], "<circle") != 3 {
		t.Errorf("the mAP chart of 3 epochs has not 3 points:\n%s", body)
	}

	// the JSON
	code, js, _ := get(t, hc, ts.URL+"/api/run/r1")
	var v RunView
	if err := json.Unmarshal([]byte(js), &v); code != 200 || err != nil {
		t.Fatalf("/api/run/r1: %d %v\n%s", code, err, js)
	}
	if strings.Contains(js, secret) {
		t.Errorf("/api/run/r1 shows a secret:\n%s", js)
	}
	if v.Summary.State != "running" || v.Summary.Leader != "coord-a" || v.Summary.BestEpoch != 3 || v.Summary.ETA != 65 || len(v.History.Epochs) != 3 ||
		len(v.Events) != 2 || v.Pointer == nil || len(v.Checkpoints) != 1 {
		t.Errorf("/api/run/r1: summary %+v, %d epochs, %d events, pointer %v, %d checkpoints", v.Summary, len(v.History.Epochs), len(v.Events), v.Pointer, len(v.Checkpoints))
	}
	for _, m := range v.Members {
		if m.ID == "w0" && (m.LeaseTTL < 25 || m.LeaseTTL > 30 || m.ContactAge != 1.5 || m.Steps != 17 || m.Compute != 0.6) {
			t.Errorf("w0: %+v; want a lease of 25 to 30 s left, contact 1.5 s before the record, 17 steps, 60%% computing", m)
		}
	}
	code, js, _ = get(t, hc, ts.URL+"/api/runs")
	var runs []RunSummary
	if err := json.Unmarshal([]byte(js), &runs); code != 200 || err != nil || len(runs) != 2 {
		t.Errorf("/api/runs: %d %v %s", code, err, js)
	}

	// read-only
	resp, err := hc.Post(ts.URL+"/run/r1", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /run/r1: %d, want 405", resp.StatusCode)
	}

	// with a run named, the front page opens it
	cfg.Run = "r1"
	srv2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts2 := httptest.NewServer(srv2)
	defer ts2.Close()
	if code, _, h := get(t, hc, ts2.URL+"/"); code != http.StatusSeeOther || h.Get("Location") != "/run/r1" {
		t.Errorf("GET / with run r1: %d to %q, want 303 to /run/r1", code, h.Get("Location"))
	}
}

// With a token file, every page but the sign-in form asks for the token:
// as a bearer token or the cookie the form sets. The token never shows.
func TestServerToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := clustertest.Client(t, clustertest.Etcd(t))
	fakeRun(t, ctx, cli, "r1", 1, "127.0.0.1:1")
	const token = "0123456789abcdef0123"
	tf := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tf, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Etcd, cfg.TokenFile = cli, tf
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	hc := ts.Client()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	for _, c := range []struct {
		name, path string
		hdr        []string
		code       int
	}{
		{"page without", "/run/r1", nil, http.StatusSeeOther},
		{"fragment without", "/run/r1/live", []string{"X-Requested-With", "fetch"}, http.StatusUnauthorized},
		{"api without", "/api/runs", nil, http.StatusUnauthorized},
		{"wrong token", "/api/runs", []string{"Authorization", "Bearer 0123456789abcdef0124"}, http.StatusUnauthorized},
		{"bearer", "/api/runs", []string{"Authorization", "Bearer " + token}, http.StatusOK},
		{"cookie", "/run/r1", []string{"Cookie", tokenCookie + "=" + token}, http.StatusOK},
		{"sign-in form", "/login", nil, http.StatusOK},
		{"stylesheet", "/static/dashboard.css", nil, http.StatusOK},
	} {
		code, body, _ := get(t, hc, ts.URL+c.path, c.hdr...)
		if code != c.code {
			t.Errorf("%s: GET %s: %d, want %d", c.name, c.path, code, c.code)
		}
		if strings.Contains(body, token) {
			t.Errorf("%s: GET %s shows the token", c.name, c.path)
		}
	}
	// the form: a wrong token is refused, the right one sets the cookie
	for _, c := range []struct {
		token, location string
		cookie          bool
	}{
		{"wrong-token-wrong-token", "/login?failed=1", false},
		{token, "/", true},
	} {
		resp, err := hc.PostForm(ts.URL+"/login", url.Values{"token": {c.token}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := false
		for _, ck := range resp.Cookies() {
			got = got || (ck.Name == tokenCookie && ck.Value == token && ck.HttpOnly)
		}
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != c.location || got != c.cookie {
			t.Errorf("sign in with %q: %d to %q, cookie %v; want 303 to %q, cookie %v", c.token, resp.StatusCode, resp.Header.Get("Location"), got, c.location, c.cookie)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli := &clientv3.Client{}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"default", func(*Config) {}, ""},
		{"no etcd", func(c *Config) { c.Etcd = nil }, "no etcd client"},
		{"bad address", func(c *Config) { c.Listen = "8090" }, "listen address"},
		{"refresh too fast", func(c *Config) { c.Refresh = time.Millisecond }, "refresh"},
		{"short token", func(c *Config) { c.TokenFile = short }, "at least 16 characters"},
		{"missing token file", func(c *Config) { c.TokenFile = short + ".missing" }, "token file"},
	} {
		cfg := DefaultConfig()
		cfg.Etcd = cli
		c.edit(&cfg)
		err := cfg.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: Validate() = %v, want %q", c.name, err, c.want)
		}
	}
}
