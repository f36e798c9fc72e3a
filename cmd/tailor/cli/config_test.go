package cli

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/optim"
)

// writeConfig writes a config file in a temporary folder and returns its path.
func writeConfig(tb testing.TB, src string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "tailor.yaml")
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func run(tb testing.TB, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	var out, errb bytes.Buffer
	code = RunContext(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestParsePrecedence parses a worker-like flag set (the file's sections are
// checked against the real commands) and checks each flag's value: command
// line over environment over the file's section over its top level over the
// default.
func TestParsePrecedence(t *testing.T) {
	file := writeConfig(t, `
etcd: http://file:2379
run: from-file
gossip: 10.0.0.1:7946
worker:
  run: from-section
  id: w-file
`)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want map[string]string
		rest []string // fs.Args()
	}{
		{name: "no file: defaults", args: nil,
			want: map[string]string{"id": "host", "run": "", "gossip": "127.0.0.1:0"}},
		{name: "file by flag", args: []string{"--config", file},
			want: map[string]string{"etcd": "http://file:2379", "run": "from-section", "id": "w-file", "gossip": "10.0.0.1:7946", "advertise": ""}},
		{name: "file by TAILOR_CONFIG", env: map[string]string{"TAILOR_CONFIG": file},
			want: map[string]string{"run": "from-section", "id": "w-file"}},
		{name: "env over file", args: []string{"--config", file}, env: map[string]string{"TAILOR_RUN": "from-env", "TAILOR_GOSSIP": "1.2.3.4:1"},
			want: map[string]string{"run": "from-env", "gossip": "1.2.3.4:1", "id": "w-file"}},
		{name: "flag over env over file", args: []string{"--config", file, "--run", "from-flag"}, env: map[string]string{"TAILOR_RUN": "from-env"},
			want: map[string]string{"run": "from-flag", "id": "w-file"}},
		{name: "flags after a positional argument", args: []string{"--config", file, "--id", "w1", "extra", "--run", "x"},
			want: map[string]string{"id": "w1", "run": "x", "gossip": "10.0.0.1:7946"}, rest: []string{"extra"}},
		{name: "positional arguments after --", args: []string{"extra", "--id", "w1", "--config", file, "--", "--run", "x"},
			want: map[string]string{"id": "w1", "run": "from-section"}, rest: []string{"extra", "--run", "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var errb bytes.Buffer
			env := &Env{Args: tc.args, Stdout: io.Discard, Stderr: &errb, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				getenv: func(k string) string { return tc.env[k] }}
			fs := newFlagSet(env, "worker", "", "")
			var cf clusterFlags
			fs.StringVar(&cf.etcd, "etcd", "", "")
			fs.StringVar(&cf.run, "run", "", "")
			fs.StringVar(&cf.gossip, "gossip", "127.0.0.1:0", "")
			fs.StringVar(&cf.advertise, "advertise", "", "")
			id := fs.String("id", "host", "")
			if code, done := parse(env, fs); done {
				t.Fatalf("parse: exit %d, done; stderr %q", code, errb.String())
			}
			got := map[string]string{"etcd": cf.etcd, "run": cf.run, "gossip": cf.gossip, "advertise": cf.advertise, "id": *id}
			for k, want := range tc.want {
				if got[k] != want {
					t.Errorf("--%s = %q, want %q", k, got[k], want)
				}
			}
			if !slices.Equal(fs.Args(), tc.rest) && len(fs.Args())+len(tc.rest) > 0 {
				t.Errorf("positional arguments %q, want %q", fs.Args(), tc.rest)
			}
		})
	}
}

// TestParseConfigErrors checks that a command refuses to start, with exit
// status 2 and a message naming file, line and key, on every kind of problem.
func TestParseConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	tests := []struct {
		name string
		file string // config file contents; empty: none
		args []string
		env  map[string]string
		want []string
	}{
		{name: "syntax", file: "etcd: a\n run: b\n", want: []string{"tailor.yaml:2: YAML syntax: mapping values are not allowed in this context"}},
		{name: "unknown key anywhere", file: "bach: 3\nsubmit:\n  batch: 3\n", want: []string{"tailor.yaml:1: bach: no command has a flag --bach; did you mean batch?"}},
		{name: "key of another command in this one's section", file: "worker:\n  batch: 32\n",
			want: []string{"tailor.yaml:2: worker.batch: tailor worker has no flag --batch (it is a flag of bench, local, submit, train: move it to one of their sections, or to the top level)"}},
		{name: "unknown section", file: "wroker:\n  id: w\n", want: []string{"tailor.yaml:1: wroker: not a flag or a command; a section is named after a command", "did you mean worker?"}},
		{name: "wrong type", file: "worker:\n  id: w\nstatus:\n  timeout: soon\n", args: []string{"status"}, want: []string{`tailor.yaml:4: status.timeout: "soon" is not a duration`}},
		{name: "wrong type in env", args: []string{"status"}, env: map[string]string{"TAILOR_WATCH": "often"}, want: []string{`TAILOR_WATCH: "often" is not a duration`}},
		{name: "missing file", env: map[string]string{"TAILOR_CONFIG": missing}, want: []string{"config: open " + missing}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if len(args) == 0 {
				args = []string{"worker"}
			}
			cmdArgs := args[1:]
			if tc.file != "" {
				cmdArgs = append(cmdArgs, "--config", writeConfig(t, tc.file))
			}
			var errb bytes.Buffer
			env := &Env{Args: cmdArgs, Stdout: io.Discard, Stderr: &errb, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				getenv: func(k string) string { return tc.env[k] }}
			code := commands[args[0]].run(context.Background(), env)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %q", code, errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr %q does not say %q", errb.String(), w)
				}
			}
		})
	}
}

// TestConfigReachesCommand runs real commands whose settings come only from
// the file: eval gets --model and --data (and fails on the missing model,
// not on missing flags); predict keeps its positional arguments.
func TestConfigReachesCommand(t *testing.T) {
	model := filepath.Join(t.TempDir(), "absent.tailor")
	file := writeConfig(t, "data: /absent/shards\neval:\n  model: "+model+"\npredict:\n  top: many\n")
	code, _, stderr := run(t, "eval", "--config", file)
	if code != 1 || !strings.Contains(stderr, model) {
		t.Errorf("eval with --model from the file: exit %d, stderr %q; want 1 and an error about %s", code, stderr, model)
	}
	code, _, stderr = run(t, "eval", "--config", file, "--model", "")
	if code != 2 || !strings.Contains(stderr, "--model and --data are required") {
		t.Errorf("eval with --model emptied on the command line: exit %d, stderr %q; want 2, required", code, stderr)
	}
	code, _, stderr = run(t, "predict", "--config", file, "m.tailor", "x.png")
	if code != 2 || !strings.Contains(stderr, `predict.top: "many" is not an integer`) {
		t.Errorf("predict with a bad --top in the file: exit %d, stderr %q", code, stderr)
	}
}

func TestConfigCheck(t *testing.T) {
	bad := writeConfig(t, `etcd: http://a:2379
bach: 3
workers: lots
worker:
  batch: 32
wroker:
  id: x
shard:
  build:
    size: big
train:
  epochs: 3
  epochs: 4
`)
	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    []string
		stderr    []string
		notStderr []string
	}{
		{name: "the deploy example", args: []string{"../../../deploy/tailor.yaml"}, code: 0,
			stdout: []string{"../../../deploy/tailor.yaml: ok (", "sections submit, coordinator, paramserver, worker"}},
		{name: "every problem", args: []string{bad}, code: 1, stderr: []string{
			"tailor.yaml:2: bach: no command has a flag --bach; did you mean batch?\n",
			`tailor.yaml:3: workers: "lots" is not an integer (for tailor data fashion, tailor local, tailor shard build)` + "\n",
			"tailor.yaml:5: worker.batch: tailor worker has no flag --batch",
			"tailor.yaml:6: wroker: not a flag or a command",
			`tailor.yaml:10: shard.build.size: "big" is not an integer` + "\n",
			"tailor.yaml:13: train.epochs: given twice (first at line 12)\n",
			"tailor.yaml: 6 problems\n",
		}},
		{name: "syntax", args: []string{writeConfig(t, "worker:\n\tid: w\n")}, code: 1,
			stderr: []string{"tailor.yaml:2: YAML syntax: found character that cannot start any token (YAML indents with spaces, not tabs)", "1 problem\n"}},
		{name: "a good and a bad file", args: []string{"../../../deploy/tailor.yaml", bad}, code: 1,
			stdout: []string{"deploy/tailor.yaml: ok"}, stderr: []string{"6 problems"}},
		{name: "missing file", args: []string{filepath.Join(t.TempDir(), "nope.yaml")}, code: 1, stderr: []string{"no such file"}},
		{name: "no file", args: nil, code: 2, stderr: []string{"name a file"}},
		{name: "file by --config", args: []string{"--config", "../../../deploy/tailor.yaml"}, code: 0, stdout: []string{"ok"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(t, append([]string{"config", "check"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stdout %q, stderr %q", code, tc.code, stdout, stderr)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout %q does not say %q", stdout, w)
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
		})
	}
}

func TestConfigShow(t *testing.T) {
	const keyFile = "/etc/very-private/gossip.key"
	file := writeConfig(t, "etcd: http://file:2379\nrun: r-file\ngossip-key-file: "+keyFile+"\nworker:\n  metrics-listen: 0.0.0.0:9100\n")
	t.Setenv("TAILOR_RUN", "r-env")
	code, stdout, stderr := run(t, "config", "show", "--config", file, "worker", "--id", "w7")
	if code != 0 {
		t.Fatalf("exit %d; stderr %q", code, stderr)
	}
	for _, re := range []string{
		`(?m)^etcd\s+http://file:2379\s+file .*tailor.yaml:1$`,
		`(?m)^run\s+r-env\s+env TAILOR_RUN$`,
		`(?m)^id\s+w7\s+flag$`,
		`(?m)^metrics-listen\s+0.0.0.0:9100\s+file .*tailor.yaml:5$`,
		`(?m)^gossip\s+127.0.0.1:0\s+default$`,
		`(?m)^gossip-key-file\s+\(set\)\s+file .*tailor.yaml:3$`,
		`(?m)^advertise\s+""\s+default$`,
	} {
		if !regexpMatch(re, stdout) {
			t.Errorf("show output does not match %s:\n%s", re, stdout)
		}
	}
	if strings.Contains(stdout+stderr, keyFile) {
		t.Errorf("show printed the secret %s:\n%s", keyFile, stdout)
	}

	if code, _, stderr := run(t, "config", "show", "shard"); code != 2 || !strings.Contains(stderr, "shard build, shard inspect") {
		t.Errorf("show shard: exit %d, stderr %q; want 2 and the subcommands", code, stderr)
	}
	if code, stdout, _ := run(t, "config", "show", "shard", "build", "--size", "32"); code != 0 || !regexpMatch(`(?m)^size\s+32\s+flag$`, stdout) {
		t.Errorf("show shard build --size 32: exit %d, stdout %q", code, stdout)
	}
	if code, _, _ := run(t, "config", "show", "nosuch"); code != 2 {
		t.Errorf("show nosuch: exit %d, want 2", code)
	}
}

// TestSchemaCoversEveryCommand makes sure every command but config reaches
// its flags when probed (a new command that dispatches on a subcommand needs
// a probeArgs entry), and that probing runs nothing.
func TestSchemaCoversEveryCommand(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range schema() {
		seen[c.Path[0]] = true
		if c.Flags.Lookup("config") == nil {
			t.Errorf("tailor %s has no --config", strings.Join(c.Path, " "))
		}
	}
	for name := range commands {
		if name != "config" && !seen[name] {
			t.Errorf("tailor %s: probing it did not reach its flags (add it to probeArgs)", name)
		}
	}
	for _, p := range [][]string{{"shard", "build"}, {"shard", "inspect"}, {"data", "fashion"}, {"checkpoints"}, {"worker"}} {
		found := false
		for _, c := range schema() {
			found = found || slices.Equal(c.Path, p)
		}
		if !found {
			t.Errorf("schema lacks tailor %s", strings.Join(p, " "))
		}
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// TestConfigCompression: the spec's compression comes from the file like
// any flag, and a bad one is refused by the spec's validation before any
// etcd is contacted.
func TestConfigCompression(t *testing.T) {
	file := writeConfig(t, "submit:\n  data: /absent\n  compression: gzip\n  topk: 0.05\n")
	code, stdout, _ := run(t, "config", "show", "--config", file, "submit")
	for _, re := range []string{`(?m)^compression\s+gzip\s+file .*tailor.yaml:3$`, `(?m)^topk\s+0.05\s+file .*tailor.yaml:4$`} {
		if code != 0 || !regexpMatch(re, stdout) {
			t.Errorf("show submit: exit %d, output does not match %s:\n%s", code, re, stdout)
		}
	}
	code, _, stderr := run(t, "submit", "--config", file, "--etcd", "http://127.0.0.1:1", "--run", "r")
	if code != 1 || !strings.Contains(stderr, `compression "gzip": want none, fp16 or topk`) {
		t.Errorf("submit with compression gzip: exit %d, stderr %q; want 1 and the spec error", code, stderr)
	}
}

// The optimizer's hyperparameters are declared once, in optim: every flag
// optim.Settings registers is a flag of tailor train, submit and local with
// the same default (and Adam's of a standalone paramserver), and so a
// config-file key, a TAILOR_ variable and a line of config show without an
// entry of its own.
func TestOptimizerFlags(t *testing.T) {
	settings, adam := optim.DefaultSettings(), optim.DefaultAdam(0)
	sfs, afs := flag.NewFlagSet("settings", flag.ContinueOnError), flag.NewFlagSet("adam", flag.ContinueOnError)
	settings.AddFlags(sfs)
	adam.AddFlags(afs)
	cmds := map[string]*flag.FlagSet{}
	for _, c := range schema() {
		cmds[strings.Join(c.Path, " ")] = c.Flags
	}
	for cmd, want := range map[string]*flag.FlagSet{"train": sfs, "submit": sfs, "local": sfs, "paramserver": afs} {
		n := 0
		want.VisitAll(func(f *flag.Flag) {
			n++
			if got := cmds[cmd].Lookup(f.Name); got == nil || got.DefValue != f.DefValue || got.Usage != f.Usage {
				t.Errorf("tailor %s --%s: got %+v, want %+v", cmd, f.Name, got, f)
			}
		})
		if n < 4 {
			t.Errorf("%s: only %d optimizer flags", cmd, n)
		}
	}
	file := writeConfig(t, "lr: 0.01\nsubmit:\n  beta2: 0.99\n")
	t.Setenv("TAILOR_EPSILON", "1e-6")
	for _, cmd := range []string{"train", "submit", "local"} {
		code, stdout, stderr := run(t, "config", "show", "--config", file, cmd, "--decay=false")
		if code != 0 {
			t.Fatalf("config show %s: exit %d, stderr %q", cmd, code, stderr)
		}
		beta2 := `(?m)^beta2\s+0.999\s+default$`
		if cmd == "submit" {
			beta2 = `(?m)^beta2\s+0.99\s+file .*tailor.yaml:3$`
		}
		for _, re := range []string{`(?m)^lr\s+0.01\s+file .*tailor.yaml:1$`, `(?m)^epsilon\s+1e-06\s+env TAILOR_EPSILON$`,
			`(?m)^decay\s+false\s+flag$`, `(?m)^beta1\s+0.9\s+default$`, beta2} {
			if !regexpMatch(re, stdout) {
				t.Errorf("config show %s does not match %s:\n%s", cmd, re, stdout)
			}
		}
	}
}

// --l2 and --weight-decay reach the trainer's and the cluster spec's
// optimizer from the command line, the environment and the file, and
// config show lists them.
func TestWeightDecayFlags(t *testing.T) {
	s := job.DefaultSpec("r", "/data")
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	addSpecFlags(fs, &s)
	if err := fs.Parse([]string{"--l2", "1e-4", "--weight-decay", "0.01"}); err != nil {
		t.Fatal(err)
	}
	if a := s.AdamConfig(); a.L2 != 1e-4 || a.WeightDecay != 0.01 {
		t.Errorf("spec's optimizer: l2 %g, weight decay %g; want 1e-4, 0.01", a.L2, a.WeightDecay)
	}
	// both commands validate what the flags set before they touch data or etcd
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--data", "/absent", "--l2", "-1"}, "l2 -1: want ≥ 0"},
		{[]string{"train", "--data", "/absent", "--lr", "0.002", "--weight-decay", "600"}, "weight decay 600 with learning rate 0.002: want lr·wd below 1"},
		{[]string{"submit", "--etcd", "http://127.0.0.1:1", "--run", "r", "--data", "/absent", "--l2", "-1"}, "l2 -1: want ≥ 0"},
		{[]string{"submit", "--etcd", "http://127.0.0.1:1", "--run", "r", "--data", "/absent", "--weight-decay", "-2"}, "weight decay -2: want ≥ 0"},
	} {
		if code, _, stderr := run(t, tc.args...); code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("tailor %s: exit %d, stderr %q; want 1 and %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
	file := writeConfig(t, "train:\n  l2: 0.0005\nsubmit:\n  l2: 0.0002\n")
	t.Setenv("TAILOR_WEIGHT_DECAY", "0.03")
	for cmd, want := range map[string]string{"train": `(?m)^l2\s+0.0005\s+file .*tailor.yaml:2$`, "submit": `(?m)^l2\s+0.0002\s+file .*tailor.yaml:4$`,
		"local": `(?m)^l2\s+0\s+default$`} {
		code, stdout, stderr := run(t, "config", "show", "--config", file, cmd)
		if code != 0 {
			t.Fatalf("config show %s: exit %d, stderr %q", cmd, code, stderr)
		}
		for _, re := range []string{want, `(?m)^weight-decay\s+0.03\s+env TAILOR_WEIGHT_DECAY$`} {
			if !regexpMatch(re, stdout) {
				t.Errorf("config show %s does not match %s:\n%s", cmd, re, stdout)
			}
		}
	}
	if code, stdout, _ := run(t, "config", "show", "train", "--l2", "1e-4"); code != 0 || !regexpMatch(`(?m)^l2\s+0.0001\s+flag$`, stdout) {
		t.Errorf("config show train --l2 1e-4: exit %d:\n%s", code, stdout)
	}
}
