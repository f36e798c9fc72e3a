package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
	"github.com/tailorml/tailor/internal/job"
)

func TestHostOrdinal(t *testing.T) {
	for _, tc := range []struct {
		host string
		want int
		bad  bool
	}{
		{host: "tailor-ps-0", want: 0},
		{host: "tailor-ps-3", want: 3},
		{host: "rel-tailor-paramserver-17", want: 17},
		{host: "ps-12.tailor-ps.default.svc.cluster.local", want: 12},
		{host: "a-b-c-1024", want: 1024},
		{host: "ps", bad: true},
		{host: "ps-", bad: true},
		{host: "ps-x", bad: true},
		{host: "ps-1a", bad: true},
		{host: "ps-+1", bad: true},
		{host: "ps--1", want: 1},
		{host: "ps-01", bad: true},
		{host: "ps-1234567890", bad: true},
		{host: "ps.3", bad: true},
		{host: "", bad: true},
	} {
		got, err := hostOrdinal(tc.host)
		if tc.bad {
			if err == nil {
				t.Errorf("hostOrdinal(%q) = %d, want an error", tc.host, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("hostOrdinal(%q) = %d, %v; want %d", tc.host, got, err, tc.want)
		}
	}
}

// --index-from-hostname reads the ordinal of the host name; --index given
// as well, on the command line or in the environment, is an error.
func TestIndexFromHostname(t *testing.T) {
	host := func(name string, err error) func() (string, error) {
		return func() (string, error) { return name, err }
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		host func() (string, error)
		want int
		err  string
	}{
		{name: "ordinal", host: host("tailor-paramserver-2", nil), want: 2},
		{name: "flag too", args: []string{"--index", "1"}, host: host("ps-2", nil), err: "give one"},
		{name: "env too", env: map[string]string{"TAILOR_INDEX": "1"}, host: host("ps-2", nil), err: "give one"},
		{name: "no ordinal", host: host("paramserver", nil), err: `host name "paramserver" does not end in -N`},
		{name: "no host name", host: host("", errors.New("uname failed")), err: "uname failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			env := &Env{Args: tc.args, Stdout: io.Discard, Stderr: &stderr,
				getenv: func(k string) string { return tc.env[k] }}
			fs := newFlagSet(env, "paramserver", "", "")
			fs.Int("index", 0, "")
			if code, done := parse(env, fs); done {
				t.Fatalf("parse: exit %d: %s", code, stderr.String())
			}
			got, err := indexFromHostname(fs, tc.host)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("got %d, %v; want an error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// tailor paramserver --index-from-hostname on a host name without an
// ordinal exits 2 and says why, before it dials etcd.
func TestParamServerIndexFromHostnameRefused(t *testing.T) {
	saved := hostname
	defer func() { hostname = saved }()
	hostname = func() (string, error) { return "paramserver", nil }
	for _, args := range [][]string{
		{"--etcd", "http://127.0.0.1:1", "--run", "r", "--index-from-hostname"},
		{"--etcd", "http://127.0.0.1:1", "--run", "r", "--index-from-hostname", "--index", "0"},
	} {
		var stderr bytes.Buffer
		env := &Env{Args: args, Stdout: io.Discard, Stderr: &stderr, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			getenv: func(string) string { return "" }}
		if code := runParamServer(context.Background(), env); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "--index-from-hostname") {
			t.Errorf("%q: stderr %q does not name the flag", args, stderr.String())
		}
	}
}

// A parameter server started with --index-from-hostname on the host
// "fashion-tailor-paramserver-1" (a StatefulSet's pod 1) joins the run as
// server 1: its membership record is ps1 with rank 1.
func TestParamServerIndexFromHostnameJoins(t *testing.T) {
	e := clustertest.Etcd(t)
	cli := clustertest.Client(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := job.DefaultSpec("k8s", t.TempDir())
	spec.ParamServers = 2
	if err := job.Submit(ctx, cli, spec); err != nil {
		t.Fatal(err)
	}
	saved := hostname
	defer func() { hostname = saved }()
	hostname = func() (string, error) { return "fashion-tailor-paramserver-1", nil }
	var stderr bytes.Buffer
	env := &Env{Args: []string{"--etcd", strings.Join(e, ","), "--run", "k8s", "--index-from-hostname",
		"--listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0"},
		Stdout: io.Discard, Stderr: &stderr, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		getenv: func(string) string { return "" }}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() { done <- runParamServer(rctx, env) }()
	key := cluster.RunKeys("k8s").Member(cluster.RoleParamServer, "ps1")
	var m cluster.Member
	for {
		_, err := cluster.GetJSON(ctx, cli, key, &m)
		if err == nil {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("paramserver exited %d before joining: %s", code, stderr.String())
		case <-ctx.Done():
			t.Fatalf("no member record %s: %v", key, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if m.Rank != 1 || m.Role != cluster.RoleParamServer {
		t.Errorf("member record %+v: want paramserver rank 1", m)
	}
	stop()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("paramserver did not stop")
	}
}
