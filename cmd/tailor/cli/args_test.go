package cli

import (
	"bytes"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestParseInterspersed parses command lines with flags anywhere through
// parse, the path every command takes, with a flag set of each kind: a
// value flag (int, string), a boolean flag that is off and one that is on
// by default.
func TestParseInterspersed(t *testing.T) {
	type want struct {
		size    int
		name    string
		standby bool
		shuffle bool
		args    []string
	}
	def := want{size: 32, name: "n", shuffle: true}
	with := func(f func(*want)) want { w := def; f(&w); return w }
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int    // exit code if parse is done; 0 and !done otherwise
		done bool   // parse returns done (help, or an error)
		out  string // in stdout (help) or stderr (errors)
		want want
	}{
		{name: "flags first", args: []string{"--size", "64", "a", "b"},
			want: with(func(w *want) { w.size, w.args = 64, []string{"a", "b"} })},
		{name: "flags last", args: []string{"a", "b", "--size", "64"},
			want: with(func(w *want) { w.size, w.args = 64, []string{"a", "b"} })},
		{name: "flags between", args: []string{"a", "--size", "64", "b", "--name", "x"},
			want: with(func(w *want) { w.size, w.name, w.args = 64, "x", []string{"a", "b"} })},
		{name: "-x=v and --x=v", args: []string{"a", "-size=7", "b", "--name=x=y"},
			want: with(func(w *want) { w.size, w.name, w.args = 7, "x=y", []string{"a", "b"} })},
		{name: "single dash with a value", args: []string{"a", "-size", "9"},
			want: with(func(w *want) { w.size, w.args = 9, []string{"a"} })},
		{name: "a value that starts with a dash", args: []string{"a", "--name", "-odd", "b"},
			want: with(func(w *want) { w.name, w.args = "-odd", []string{"a", "b"} })},
		{name: "a boolean flag takes no value", args: []string{"a", "--standby", "b"},
			want: with(func(w *want) { w.standby, w.args = true, []string{"a", "b"} })},
		{name: "a boolean flag set false", args: []string{"a", "--shuffle=false", "-standby=true"},
			want: with(func(w *want) { w.shuffle, w.standby, w.args = false, true, []string{"a"} })},
		{name: "a boolean flag does not take the next argument", args: []string{"--shuffle", "false"},
			want: with(func(w *want) { w.args = []string{"false"} })},
		{name: "-- ends the flags", args: []string{"a", "--size", "5", "--", "--name", "x", "-"},
			want: with(func(w *want) { w.size, w.args = 5, []string{"a", "--name", "x", "-"} })},
		{name: "-- first", args: []string{"--", "-a", "--help"},
			want: with(func(w *want) { w.args = []string{"-a", "--help"} })},
		{name: "- alone is an argument", args: []string{"-", "--standby"},
			want: with(func(w *want) { w.standby, w.args = true, []string{"-"} })},
		{name: "the last of a repeated flag wins", args: []string{"--size", "1", "a", "--size", "2"},
			want: with(func(w *want) { w.size, w.args = 2, []string{"a"} })},
		{name: "a flag after a positional argument beats the environment", args: []string{"a", "--size", "5"},
			env:  map[string]string{"TAILOR_SIZE": "6", "TAILOR_NAME": "from-env"},
			want: with(func(w *want) { w.size, w.name, w.args = 5, "from-env", []string{"a"} })},
		{name: "unknown flag after the arguments", args: []string{"a", "b", "--sise", "64"}, code: 2, done: true,
			out: "flag provided but not defined: -sise"},
		{name: "unknown flag first", args: []string{"--bogus", "a"}, code: 2, done: true, out: "flag provided but not defined: -bogus"},
		{name: "missing value", args: []string{"a", "--size"}, code: 2, done: true, out: "flag needs an argument: -size"},
		{name: "bad value", args: []string{"a", "--size", "big"}, code: 2, done: true, out: `invalid value "big" for flag -size`},
		{name: "bad boolean", args: []string{"a", "--standby=maybe"}, code: 2, done: true, out: `invalid boolean value "maybe"`},
		{name: "bad syntax", args: []string{"a", "---size", "1"}, code: 2, done: true, out: "bad flag syntax: ---size"},
		{name: "help after the arguments", args: []string{"a", "b", "--help"}, code: 0, done: true, out: "Usage: tailor thing [flags] A B"},
		{name: "-h between the arguments", args: []string{"a", "-h", "b"}, code: 0, done: true, out: "Usage: tailor thing [flags] A B"},
		{name: "-help with a bad flag before it", args: []string{"--bogus", "-help"}, code: 0, done: true, out: "Usage: tailor thing [flags] A B"},
		{name: "--help as a flag's value is no help", args: []string{"--name", "--help"},
			want: with(func(w *want) { w.name = "--help" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			env := &Env{Args: tt.args, Stdout: &out, Stderr: &errb, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				getenv: func(k string) string { return tt.env[k] }}
			fs := newFlagSet(env, "thing", "A B", "Does a thing.")
			size := fs.Int("size", 32, "size in `pixels`")
			name := fs.String("name", "n", "a name")
			standby := fs.Bool("standby", false, "stand by")
			shuffle := fs.Bool("shuffle", true, "shuffle")
			code, done := parse(env, fs)
			if code != tt.code || done != tt.done {
				t.Fatalf("parse = (%d, %v), want (%d, %v)\nstdout: %s\nstderr: %s", code, done, tt.code, tt.done, out.String(), errb.String())
			}
			if tt.done {
				where := errb.String()
				if tt.code == 0 {
					where = out.String()
				}
				if !strings.Contains(where, tt.out) {
					t.Errorf("output lacks %q\nstdout: %s\nstderr: %s", tt.out, out.String(), errb.String())
				}
				return
			}
			got := want{*size, *name, *standby, *shuffle, fs.Args()}
			if got.args == nil {
				got.args = []string{}
			}
			w := tt.want
			if w.args == nil {
				w.args = []string{}
			}
			if got.size != w.size || got.name != w.name || got.standby != w.standby || got.shuffle != w.shuffle || !slices.Equal(got.args, w.args) {
				t.Errorf("got %+v\nwant %+v", got, w)
			}
		})
	}
}

// --help prints the same usage wherever it is, and the same as before flags
// could come anywhere: the usage line, the description, every flag.
func TestHelpAnywhere(t *testing.T) {
	var first string
	for _, args := range [][]string{
		{"shard", "build", "--help"},
		{"shard", "build", "src", "--help"},
		{"shard", "build", "src", "dst", "--size", "64", "-h"},
		{"shard", "build", "--size", "64", "src", "-help", "dst"},
	} {
		code, out, errs := run(t, args...)
		if code != 0 || errs != "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errs)
		}
		if first == "" {
			first = out
			for _, want := range []string{"Usage: tailor shard build [flags] SRC DST\n", "\nFlags:\n", "-max-shard-bytes", "output width and height in pixels"} {
				if !strings.Contains(out, want) {
					t.Errorf("%q: usage lacks %q:\n%s", args, want, out)
				}
			}
		} else if out != first {
			t.Errorf("%q: usage differs from shard build --help:\n%s", args, out)
		}
	}
}

// One command line per kind of command with flags after or between the
// positional arguments.
func TestSubcommandsInterspersed(t *testing.T) {
	src := shardTestTree(t)
	dst := filepath.Join(t.TempDir(), "ds")
	// shard build SRC DST --size N, and a boolean flag in between
	code, out, errs := run(t, "shard", "build", src, "--quiet", dst, "--size", "8", "--min-side=4")
	if code != 0 || !strings.Contains(out, "images    8x8x3") || strings.Contains(errs, "100.0%") {
		t.Fatalf("shard build SRC DST --size 8: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	// shard inspect DST --verify
	if code, out, errs := run(t, "shard", "inspect", dst, "--verify"); code != 0 || !strings.Contains(out, "all 2 shards ok") {
		t.Errorf("shard inspect DST --verify: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	// a source named like a flag, after --
	if code, _, errs := run(t, "shard", "build", "--size", "8", "--", "-no-such-dir", dst+"2"); code != 1 || !strings.Contains(errs, "-no-such-dir") {
		t.Errorf("shard build -- -no-such-dir DST: exit %d, stderr %q; want 1 and the source not found", code, errs)
	}
	// config show sees flags after the command's arguments as the command's
	code, out, errs = run(t, "config", "show", "shard", "build", src, dst, "--size", "64", "--quiet")
	if code != 0 || !regexpMatch(`(?m)^size\s+64\s+flag$`, out) || !regexpMatch(`(?m)^quiet\s+true\s+flag$`, out) {
		t.Errorf("config show shard build SRC DST --size 64: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	// certs: the action among the flags
	dir := filepath.Join(t.TempDir(), "pki")
	if code, out, errs := run(t, "certs", "--dir", dir, "init", "--hosts", "h1", "--pairs=node"); code != 0 || !strings.Contains(out, "node.pem") {
		t.Errorf("certs --dir D init --hosts h1: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
}
