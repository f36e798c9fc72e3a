package cli

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

// The dashboard command's flags: what it refuses, and a dashboard that
// starts, prints its address, answers and stops with the context.
func TestDashboardCommand(t *testing.T) {
	t.Setenv("TAILOR_ETCD", "")
	t.Setenv("TAILOR_RUN", "")
	endpoints := clustertest.Etcd(t)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no etcd", nil, "--etcd is required"},
		{"an argument", []string{"--etcd", endpoints[0], "extra"}, "unexpected arguments"},
		{"token without --secure", []string{"--etcd", endpoints[0], "--token-file", token}, "--token-file goes with --secure"},
		{"--secure with nothing", []string{"--etcd", endpoints[0], "--secure"}, "--secure needs"},
	} {
		var out, errb strings.Builder
		code := RunContext(context.Background(), append([]string{"dashboard"}, c.args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q", c.name, code, errb.String(), c.want)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int)
	go func() {
		code := RunContext(ctx, []string{"dashboard", "--etcd", endpoints[0], "--listen", "127.0.0.1:0", "--secure", "--token-file", token}, pw, io.Discard)
		pw.Close()
		done <- code
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	go io.Copy(io.Discard, pr)
	u, ok := strings.CutPrefix(strings.TrimSpace(line), "dashboard: ")
	if err != nil || !ok || !strings.HasPrefix(u, "http://127.0.0.1:") {
		cancel()
		t.Fatalf("first line %q (%v), want dashboard: http://127.0.0.1:PORT/", line, err)
	}
	for _, c := range []struct {
		auth string
		code int
	}{{"", http.StatusUnauthorized}, {"Bearer 0123456789abcdef0123", http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, u+"api/runs", nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("GET /api/runs with %q: %d, want %d", c.auth, resp.StatusCode, c.code)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after the context ended, want 0", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dashboard did not stop with its context")
	}
}
