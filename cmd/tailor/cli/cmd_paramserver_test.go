package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
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
