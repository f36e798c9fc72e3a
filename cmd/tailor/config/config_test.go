package config

import (
	"errors"
	"flag"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCommands is a small command tree: worker, submit, shard build and
// shard inspect.
func testCommands(tb testing.TB) []Command {
	tb.Helper()
	mk := func(path string, add func(fs *flag.FlagSet)) Command {
		fs := flag.NewFlagSet("tailor "+path, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String(FlagName, "", "config file")
		fs.String("etcd", "", "")
		add(fs)
		return Command{Path: strings.Fields(path), Flags: fs}
	}
	return []Command{
		mk("worker", func(fs *flag.FlagSet) {
			fs.String("id", "host", "")
			fs.String("gossip", "127.0.0.1:0", "")
			fs.String("gossip-key-file", "", "")
		}),
		mk("submit", func(fs *flag.FlagSet) {
			fs.Int("batch", 32, "")
			fs.Uint64("seed", 1, "")
			fs.Float64("lr", 0.001, "")
			fs.Bool("augment", false, "")
			fs.Duration("step-deadline", time.Minute, "")
			fs.String("data", "", "")
			fs.Int("api-key", 0, "") // a secret of a type that can be wrong
		}),
		mk("shard build", func(fs *flag.FlagSet) { fs.Int("size", 64, "") }),
		mk("shard inspect", func(fs *flag.FlagSet) { fs.Bool("verify", false, "") }),
	}
}

func command(cmds []Command, path string) Command {
	for _, c := range cmds {
		if strings.Join(c.Path, " ") == path {
			return c
		}
	}
	panic("no command " + path)
}

func mustParse(tb testing.TB, src string) *File {
	tb.Helper()
	f, err := Parse("tailor.yaml", []byte(src))
	if err != nil {
		tb.Fatalf("Parse: %v", err)
	}
	return f
}

func TestEnvName(t *testing.T) {
	for _, tc := range []struct{ flag, want string }{
		{"etcd", "TAILOR_ETCD"},
		{"gossip-key-file", "TAILOR_GOSSIP_KEY_FILE"},
		{"s3-endpoint", "TAILOR_S3_ENDPOINT"},
		{"config", "TAILOR_CONFIG"},
	} {
		if got := EnvName(tc.flag); got != tc.want {
			t.Errorf("EnvName(%q) = %q, want %q", tc.flag, got, tc.want)
		}
	}
}

func TestSecret(t *testing.T) {
	for name, want := range map[string]bool{
		"gossip-key-file": true, "s3-secret": true, "password": true, "api-token": true,
		"s3-credentials-file": true, "etcd": false, "batch": false, "run": false,
	} {
		if got := Secret(name); got != want {
			t.Errorf("Secret(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestApplyPrecedence(t *testing.T) {
	const file = `
id: top
gossip: top:1
worker:
  id: section
`
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		file   string
		flag   string
		want   string
		source Source
		origin string
	}{
		{name: "default", flag: "id", want: "host", source: Default},
		{name: "top level", file: "id: top\n", flag: "id", want: "top", source: FromFile, origin: "tailor.yaml:1"},
		{name: "section beats top level", file: file, flag: "id", want: "section", source: FromFile, origin: "tailor.yaml:5"},
		{name: "top level when the section lacks it", file: file, flag: "gossip", want: "top:1", source: FromFile, origin: "tailor.yaml:3"},
		{name: "env beats file", file: file, env: map[string]string{"TAILOR_ID": "env"}, flag: "id", want: "env", source: FromEnv, origin: "TAILOR_ID"},
		{name: "empty env is unset", file: file, env: map[string]string{"TAILOR_ID": ""}, flag: "id", want: "section", source: FromFile, origin: "tailor.yaml:5"},
		{name: "flag beats env and file", args: []string{"--id", "flag"}, file: file, env: map[string]string{"TAILOR_ID": "env"}, flag: "id", want: "flag", source: FromFlag},
		{name: "empty flag still wins", args: []string{"--id="}, file: file, flag: "id", want: "", source: FromFlag},
		{name: "env without file", env: map[string]string{"TAILOR_GOSSIP": "env:2"}, flag: "gossip", want: "env:2", source: FromEnv, origin: "TAILOR_GOSSIP"},
		{name: "null leaves the default", file: "worker:\n  id:\n", flag: "id", want: "host", source: Default},
		{name: "list joined with commas", file: "etcd: [http://a:1, http://b:2]\n", flag: "etcd", want: "http://a:1,http://b:2", source: FromFile, origin: "tailor.yaml:1"},
		{name: "alias", file: "x: &e http://a:1\netcd: *e\n", flag: "etcd", want: "http://a:1", source: FromFile, origin: "tailor.yaml:2"},
		{name: "config from env", env: map[string]string{"TAILOR_CONFIG": "c.yaml"}, flag: "config", want: "c.yaml", source: FromEnv, origin: "TAILOR_CONFIG"},
		{name: "other command's section ignored", file: "submit:\n  data: x\nshard:\n  build:\n    size: 9\n", flag: "id", want: "host", source: Default},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := command(testCommands(t), "worker")
			if err := w.Flags.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var f *File
			if tc.file != "" {
				f, _ = Parse("tailor.yaml", []byte(tc.file)) // "x:" is unknown to Validate, not to Apply
			}
			settings, err := Apply(w.Flags, w.Path, f, func(k string) string { return tc.env[k] })
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := w.Flags.Lookup(tc.flag).Value.String(); got != tc.want {
				t.Errorf("--%s = %q, want %q", tc.flag, got, tc.want)
			}
			for _, st := range settings {
				if st.Flag.Name == tc.flag && (st.Source != tc.source || st.Origin != tc.origin) {
					t.Errorf("source of --%s = %v %q, want %v %q", tc.flag, st.Source, st.Origin, tc.source, tc.origin)
				}
			}
		})
	}
}

func TestApplyNestedSections(t *testing.T) {
	f := mustParse(t, "shard:\n  size: 32\n  build:\n    size: 96\n  verify: true\n")
	cmds := testCommands(t)
	if err := f.Validate(cmds); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	b, i := command(cmds, "shard build"), command(cmds, "shard inspect")
	for _, c := range []Command{b, i} {
		if _, err := Apply(c.Flags, c.Path, f, func(string) string { return "" }); err != nil {
			t.Fatalf("Apply %v: %v", c.Path, err)
		}
	}
	if got := b.Flags.Lookup("size").Value.String(); got != "96" {
		t.Errorf("shard build --size = %s, want 96 (its own section beats shard:)", got)
	}
	if got := i.Flags.Lookup("verify").Value.String(); got != "true" {
		t.Errorf("shard inspect --verify = %s, want true (from shard:)", got)
	}
}

func TestApplyValueErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		want []string
	}{
		{name: "int", file: "submit:\n  batch: abc\n", want: []string{`tailor.yaml:2: submit.batch: "abc" is not an integer`}},
		{name: "int range", file: "batch: 99999999999999999999\n", want: []string{`tailor.yaml:1: batch: "99999999999999999999" is out of range for --batch`}},
		{name: "uint", file: "seed: -1\n", want: []string{`tailor.yaml:1: seed: "-1" is not a non-negative integer`}},
		{name: "float", file: "lr: fast\n", want: []string{`tailor.yaml:1: lr: "fast" is not a number`}},
		{name: "bool", file: "augment: yes\n", want: []string{`tailor.yaml:1: augment: "yes" is not true or false`}},
		{name: "duration", file: "step-deadline: 5\n", want: []string{`tailor.yaml:1: step-deadline: "5" is not a duration (e.g. 500ms, 30s, 5m, 1h30m)`}},
		{name: "every error, not the first", file: "batch: x\nsubmit:\n  lr: y\n", want: []string{
			`tailor.yaml:1: batch: "x" is not an integer`, `tailor.yaml:3: submit.lr: "y" is not a number`}},
		{name: "env", env: map[string]string{"TAILOR_BATCH": "lots"}, want: []string{`TAILOR_BATCH: "lots" is not an integer`}},
		{name: "secret value hidden", file: "api-key: hunter2\n", want: []string{`tailor.yaml:1: api-key: the value is not an integer`}},
		{name: "secret env hidden", env: map[string]string{"TAILOR_API_KEY": "hunter2"}, want: []string{`TAILOR_API_KEY: the value is not an integer`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := command(testCommands(t), "submit")
			var f *File
			if tc.file != "" {
				f = mustParse(t, tc.file)
			}
			_, err := Apply(s.Flags, s.Path, f, func(k string) string { return tc.env[k] })
			var got []string
			for _, e := range Errors(err) {
				got = append(got, e.Error())
				if strings.Contains(e.Error(), "hunter2") {
					t.Errorf("error %q shows a secret", e)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{name: "syntax", src: "etcd: a\n run: b\n", want: []string{"tailor.yaml:2: YAML syntax: mapping values are not allowed in this context"}},
		{name: "tab", src: "worker:\n\tid: w\n", want: []string{"tailor.yaml:2: YAML syntax: found character that cannot start any token (YAML indents with spaces, not tabs)"}},
		{name: "not a mapping", src: "- etcd\n- run\n", want: []string{"tailor.yaml:1: want a mapping of flag names to values at the top level, got a list"}},
		{name: "two documents", src: "etcd: a\n---\nrun: b\n", want: []string{"tailor.yaml:2: want one YAML document, found a second (remove the '---')"}},
		{name: "duplicate", src: "etcd: a\nworker:\n  id: a\n  id: b\n", want: []string{"tailor.yaml:4: worker.id: given twice (first at line 3)"}},
		{name: "config key", src: "config: other.yaml\n", want: []string{"tailor.yaml:1: config: a config file cannot name another one (use --config or TAILOR_CONFIG)"}},
		{name: "merge key", src: "base: &b {id: x}\nworker:\n  <<: *b\n", want: []string{"tailor.yaml:3: worker.<<: merge keys are not supported: write the keys out"}},
		{name: "list of mappings", src: "etcd:\n  - a\n  - {b: c}\n", want: []string{"tailor.yaml:3: etcd: a list item must be a plain value, got a mapping"}},
		{name: "several", src: "etcd: a\netcd: b\nworker:\n  config: x\n", want: []string{
			"tailor.yaml:2: etcd: given twice (first at line 1)",
			"tailor.yaml:4: worker.config: a config file cannot name another one (use --config or TAILOR_CONFIG)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("tailor.yaml", []byte(tc.src))
			var got []string
			for _, e := range Errors(err) {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "---\n"} {
		f, err := Parse("tailor.yaml", []byte(src))
		if err != nil || f == nil || f.Len() != 0 {
			t.Errorf("Parse(%q) = %v, %v; want an empty file", src, f, err)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{name: "ok", src: "etcd: a\nbatch: 3\nworker:\n  id: w\nshard:\n  build:\n    size: 3\n"},
		{name: "top-level flag of another command", src: "verify: true\n"},
		{name: "unknown top-level key", src: "bach: 3\n", want: []string{"tailor.yaml:1: bach: no command has a flag --bach; did you mean batch?"}},
		{name: "unknown key far from any", src: "zzzzzz: 3\n", want: []string{"tailor.yaml:1: zzzzzz: no command has a flag --zzzzzz"}},
		{name: "flag of another command in a section", src: "worker:\n  batch: 3\n", want: []string{
			"tailor.yaml:2: worker.batch: tailor worker has no flag --batch (it is a flag of submit: move it to one of their sections, or to the top level)"}},
		{name: "typo in a section", src: "worker:\n  gosip: x\n", want: []string{"tailor.yaml:2: worker.gosip: tailor worker has no flag --gosip; did you mean gossip?"}},
		{name: "unknown section", src: "wroker:\n  id: x\n", want: []string{
			"tailor.yaml:1: wroker: not a flag or a command; a section is named after a command (shard, submit, worker); did you mean worker?"}},
		{name: "unknown subsection", src: "shard:\n  biuld:\n    size: 3\n", want: []string{
			"tailor.yaml:2: shard.biuld: not a flag or a subcommand of tailor shard (subcommands: build, inspect); did you mean build?"}},
		{name: "key under a group no command has", src: "shard:\n  id: x\n", want: []string{"tailor.yaml:2: shard.id: no tailor shard command has a flag --id (it is a flag of worker: move it to one of their sections, or to the top level)"}},
		{name: "flag given a mapping", src: "batch:\n  a: 1\n", want: []string{"tailor.yaml:1: batch: --batch takes a value, not a mapping"}},
		{name: "section of a leaf command", src: "worker:\n  extra:\n    id: x\n", want: []string{"tailor.yaml:2: worker.extra: tailor worker has no subcommands and no flag --extra"}},
		{name: "a flag given a value", src: "data: s3://b/p\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := mustParse(t, tc.src).Validate(testCommands(t))
			var got []string
			for _, e := range Errors(err) {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want a not-exist error", err)
	}
}
