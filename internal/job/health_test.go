package job

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

// get returns the status code of GET url, or 0 if the request failed.
func get(t *testing.T, url string) int {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatus polls url until it answers want, or fails at the deadline.
func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	got := 0
	for time.Now().Before(deadline) {
		if got = get(t, url); got == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("GET %s: got %d, want %d", url, got, want)
}

// The /metrics listener answers /healthz while the process waits for the
// run's spec, and /readyz only once it has joined the run.
func TestJoinHealthEndpoints(t *testing.T) {
	e := clustertest.Etcd(t)
	cli := clustertest.Client(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := "127.0.0.1:" + freePort(t)
	base := "http://" + addr
	cfg := Node{Run: "health", Etcd: e, MetricsAddr: addr}
	type joined struct {
		s   *Session
		err error
	}
	done := make(chan joined, 1)
	go func() {
		s, err := Join(ctx, cfg, cluster.Member{ID: "w1", Role: cluster.RoleWorker})
		done <- joined{s, err}
	}()
	// no spec yet: live, not ready, no metrics
	waitStatus(t, base+PathLive, http.StatusOK)
	if got := get(t, base+PathReady); got != http.StatusServiceUnavailable {
		t.Errorf("%s before the spec: got %d, want 503", PathReady, got)
	}
	if got := get(t, base+"/metrics"); got != http.StatusServiceUnavailable {
		t.Errorf("/metrics before the spec: got %d, want 503", got)
	}
	select {
	case j := <-done:
		t.Fatalf("Join returned before the spec was submitted: %v", j.err)
	default:
	}
	if err := Submit(ctx, cli, DefaultSpec("health", "/data")); err != nil {
		t.Fatal(err)
	}
	j := <-done
	if j.err != nil {
		t.Fatal(j.err)
	}
	if got := j.s.Members.Self().Addrs[AddrMetrics]; got != addr {
		t.Errorf("metrics published as %q, want %q", got, addr)
	}
	if got := get(t, base+PathReady); got != http.StatusOK {
		t.Errorf("%s after joining: got %d, want 200", PathReady, got)
	}
	if got := get(t, base+PathLive); got != http.StatusOK {
		t.Errorf("%s after joining: got %d, want 200", PathLive, got)
	}
	j.s.ServeMetrics(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "m 1\n") }))
	if got := get(t, base+"/metrics"); got != http.StatusOK {
		t.Errorf("/metrics with a handler: got %d, want 200", got)
	}
	j.s.Close(ctx)
	if got := get(t, base+PathLive); got != 0 {
		t.Errorf("%s after Close: got %d, want the listener closed", PathLive, got)
	}
}

// A process that left the run (Close) is not ready, however it is asked.
func TestReadyzAfterLeaving(t *testing.T) {
	s := &Session{}
	h := s.healthMux()
	for _, tc := range []struct {
		ready bool
		path  string
		want  int
	}{
		{false, PathReady, http.StatusServiceUnavailable},
		{true, PathReady, http.StatusOK},
		{false, PathLive, http.StatusOK},
		{true, PathLive, http.StatusOK},
		{true, "/nope", http.StatusNotFound},
	} {
		s.setReady(tc.ready)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("ready=%v GET %s: got %d, want %d", tc.ready, tc.path, rec.Code, tc.want)
		}
	}
}

// A Join that fails waiting for the spec closes its listener.
func TestJoinClosesListenerOnError(t *testing.T) {
	e := clustertest.Etcd(t)
	addr := "127.0.0.1:" + freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := Join(ctx, Node{Run: "never", Etcd: e, MetricsAddr: addr}, cluster.Member{ID: "w1", Role: cluster.RoleWorker}); err == nil {
		t.Fatal("Join of a run without a spec returned no error")
	}
	if got := get(t, "http://"+addr+PathLive); got != 0 {
		t.Errorf("%s after a failed Join: got %d, want the listener closed", PathLive, got)
	}
}
