package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/localcluster/supervise"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// fakeTailor writes a shell script that stands in for tailor: every
// process appends its command line, the TAILOR_CONFIG it sees and whether
// it has S3 credentials to a log, and says it started; the coordinator
// waits (up to 20 s) until n processes have written theirs and exits
// cleanly, as a leader that recorded the run done. A process whose role is
// in FAKE_TAILOR_FAIL exits with status 1; while it is set, the
// coordinator never exits cleanly.
func fakeTailor(t *testing.T, n int) (bin, log string) {
	t.Helper()
	dir := t.TempDir()
	bin, log = filepath.Join(dir, "tailor"), filepath.Join(dir, "procs.log")
	script := fmt.Sprintf(`#!/bin/sh
echo "$* config=${TAILOR_CONFIG-unset} aws=${AWS_ACCESS_KEY_ID:+set}" >> %[1]q
echo "started $1"
case " $FAKE_TAILOR_FAIL " in *" $1 "*) exit 1;; esac
if [ "$1" = coordinator ]; then
	i=0
	while [ -n "$FAKE_TAILOR_FAIL" ] || [ "$(wc -l < %[1]q)" -lt %[2]d ]; do
		i=$((i+1))
		if [ $i -gt 400 ]; then exit 3; fi
		sleep 0.05
	done
fi
exit 0
`, log, n)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, log
}

// testShards builds a tiny data set in a folder.
func testShards(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "shards")
	st, err := store.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	bc := shard.DefaultBuildConfig()
	bc.Size, bc.MinSide = 8, 4
	if _, err := shard.Build(context.Background(), bc, testTree(t), st, nil, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testConfig is a cluster of 2 parameter servers and 2 workers of the
// fake tailor, on the data set in a folder, in files; its output
// collected, the processes' lines streamed to stderr (Verbose).
func testConfig(t *testing.T, data string) (Config, *bytes.Buffer, *bytes.Buffer, string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Out, cfg.Workers, cfg.Store, cfg.Spec.Data, cfg.Spec.ParamServers, cfg.RestartLimit = t.TempDir(), 2, StoreFile, data, 2, 0
	cfg.Verbose = true
	cfg.Dashboard = "127.0.0.1:0" // a free port: tests run side by side
	bin, log := fakeTailor(t, 5)
	var stdout, stderr bytes.Buffer
	cfg.Executable, cfg.Stdout, cfg.Stderr = bin, &stdout, &stderr
	cfg.Log = slog.New(slog.NewTextHandler(&stderr, nil))
	return cfg, &stdout, &stderr, log
}

// submitted reads the spec Run submitted, from the embedded etcd's data
// in out.
func submitted(t *testing.T, out string) job.Spec {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{Dir: filepath.Join(out, "etcd"), FastTicks: true, UnsafeNoFsync: true, LogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := cluster.NewClient(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var s job.Spec
	if _, err := cluster.GetJSON(ctx, cli, cluster.RunKeys("local").Spec(), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// procLines are the lines the fake processes wrote to log.
func procLines(t *testing.T, log string) string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Run with stand-ins for the processes: an embedded etcd, the spec
// submitted with the data folder and the checkpoints next to the run,
// every process started with the flags that reach the run, the
// environment's settings for one process not passed on, the line that
// says how to watch the run, and the result; then a resumed run, one
// resumed with another spec, and a required process that fails.
func TestRunProcesses(t *testing.T) {
	t.Setenv("TAILOR_CONFIG", filepath.Join(t.TempDir(), "tailor.yaml"))
	t.Setenv("FAKE_TAILOR_FAIL", "")
	data := testShards(t)
	cfg, stdout, stderr, log := testConfig(t, data)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	run := filepath.Join(cfg.Out, "run")
	if want := (Result{Run: "local", Out: run, Model: filepath.Join(run, "model.tailor"), History: filepath.Join(run, "history.png"),
		TestMetrics: filepath.Join(run, "test_metrics.txt")}); res != want {
		t.Errorf("Run = %+v, want %+v", res, want)
	}
	m := regexp.MustCompile(`^run local: etcd (http://127\.0\.0\.1:\d+); watch it with: tailor status --etcd (\S+) --run local --watch 2s\nrun local: learning rate [^\n]+\ndashboard: http://127\.0\.0\.1:\d+/\n$`).FindStringSubmatch(stdout.String())
	if m == nil || m[1] != m[2] {
		t.Fatalf("stdout:\n%s", stdout)
	}
	etcd := m[1]
	procs := procLines(t, log)
	common := "--etcd " + etcd + " --run local --metrics-listen 127.0.0.1:0 --gossip 127.0.0.1:0"
	for _, want := range []string{
		"coordinator --id coord-a " + common + " --listen 127.0.0.1:0 config= aws=\n",
		"paramserver --index 0 " + common + " --listen 127.0.0.1:0 config= aws=\n",
		"paramserver --index 1 " + common + " --listen 127.0.0.1:0 config= aws=\n",
		"worker --id w0 " + common + " config= aws=\n",
		"worker --id w1 " + common + " config= aws=\n",
	} {
		if !strings.Contains(procs, want) {
			t.Errorf("no process ran %q:\n%s", want, procs)
		}
	}
	for _, want := range []string{"coordinator | started coordinator", "ps1         | started paramserver", "w1          | started worker", "msg=etcd"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	s := submitted(t, cfg.Out)
	if s.Data != data || s.Checkpoints != filepath.Join(cfg.Out, "checkpoints") || s.Out != run || s.Workers != 2 || s.ParamServers != 2 {
		t.Errorf("the spec submitted: data %q, checkpoints %q, out %q, %d workers, %d servers", s.Data, s.Checkpoints, s.Out, s.Workers, s.ParamServers)
	}

	// resumed, with the run's spec and with another; each run's
	// coordinator waits for the lines of its own processes
	again := func() (Result, error) {
		t.Helper()
		if err := os.Remove(log); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return Run(ctx, cfg)
	}
	cfg.Resume = true
	if _, err := again(); err != nil {
		t.Fatalf("a resumed run: %v\nstderr:\n%s", err, stderr)
	}
	cfg.Spec.Epochs++
	if _, err := again(); !errors.Is(err, job.ErrExists) || !strings.Contains(err.Error(), "--resume goes on with the run's spec") {
		t.Errorf("a run resumed with another spec: %v, want job.ErrExists and a hint", err)
	}
	// a new run in the same folder starts afresh with its spec
	cfg.Resume = false
	if _, err := again(); err != nil {
		t.Fatalf("a new run in the folder: %v", err)
	}

	// a parameter server that fails, with no restarts: the run ends with an
	// error naming it
	t.Setenv("FAKE_TAILOR_FAIL", "paramserver")
	_, err = again()
	if !errors.Is(err, supervise.ErrChildFailed) || !regexp.MustCompile(`: ps[01]: `).MatchString(err.Error()) {
		t.Errorf("a run whose parameter server fails: %v, want supervise.ErrChildFailed naming it", err)
	}
}

// Without Verbose each process's lines go to its file in Out/logs only;
// stdout gets a few plain status lines (not a terminal) and the
// supervisor's lines about a process that fails; stderr none of the
// processes' lines.
func TestRunQuiet(t *testing.T) {
	t.Setenv("FAKE_TAILOR_FAIL", "")
	cfg, stdout, stderr, procs := testConfig(t, testShards(t))
	cfg.Verbose = false
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := Run(ctx, cfg); err != nil {
		t.Fatalf("Run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	took := time.Since(start)
	for file, role := range map[string]string{"coordinator-coord-a.log": "coordinator", "paramserver-ps0.log": "paramserver",
		"paramserver-ps1.log": "paramserver", "worker-w0.log": "worker", "worker-w1.log": "worker"} {
		b, err := os.ReadFile(filepath.Join(cfg.Out, LogsDir, file))
		if err != nil {
			t.Error(err)
			continue
		}
		if string(b) != "started "+role+"\n" {
			t.Errorf("%s: %q, want the process's line", file, b)
		}
	}
	if strings.Contains(stderr.String(), "started ") {
		t.Errorf("stderr has the processes' lines:\n%s", stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if !strings.HasPrefix(lines[0], "run local: etcd ") {
		t.Errorf("stdout's first line %q, want the etcd line", lines[0])
	}
	if len(lines) < 3 || !strings.HasPrefix(lines[1], "run local: learning rate ") || !strings.HasPrefix(lines[2], "dashboard: http://127.0.0.1:") {
		t.Errorf("stdout's second and third lines %q, want the learning rate and the dashboard's address", lines[1:])
	}
	status := 0
	for _, l := range lines[3:] {
		if !strings.HasPrefix(l, "status ") {
			t.Errorf("stdout line %q: want only status lines after the first", l)
		}
		status++
	}
	// a line when the state changes, every 10 s, and the last one
	if most := 3 + int(took/plainEvery) + 1; status < 1 || status > most {
		t.Errorf("%d status lines in %v, want 1 to %d:\n%s", status, took, most, stdout)
	}

	// a resumed run appends to the logs; a new run empties them
	for _, c := range []struct {
		resume bool
		lines  int
	}{{true, 2}, {false, 1}} {
		if err := os.Remove(procs); err != nil {
			t.Fatal(err)
		}
		cfg.Resume = c.resume
		if _, err := Run(ctx, cfg); err != nil {
			t.Fatalf("Run (resume %v): %v", c.resume, err)
		}
		b, err := os.ReadFile(filepath.Join(cfg.Out, LogsDir, "worker-w1.log"))
		if err != nil || strings.Count(string(b), "started worker\n") != c.lines {
			t.Errorf("after a run with resume %v, worker-w1.log is %q (%v), want %d lines", c.resume, b, err, c.lines)
		}
	}

	// a process that fails: the supervisor's lines about it on stdout and
	// in its log, its own lines in its log only
	t.Setenv("FAKE_TAILOR_FAIL", "paramserver")
	cfg.Resume, cfg.RestartLimit = false, 1
	stdout.Reset()
	if _, err := Run(ctx, cfg); !errors.Is(err, supervise.ErrChildFailed) {
		t.Fatalf("Run with a failing parameter server: %v, want supervise.ErrChildFailed", err)
	}
	if !regexp.MustCompile(`(?m)^ps[01] +\| exited: exit status 1; restarting in `).MatchString(stdout.String()) || strings.Contains(stdout.String(), "started paramserver") {
		t.Errorf("stdout: want the supervisor's restart line and no process line:\n%s", stdout)
	}
	// (the one that reached its limit first ended the run: the other may
	// have been stopped before it failed)
	found := false
	for _, f := range []string{"paramserver-ps0.log", "paramserver-ps1.log"} {
		b, err := os.ReadFile(filepath.Join(cfg.Out, LogsDir, f))
		if err != nil {
			t.Fatal(err)
		}
		found = found || strings.Contains(string(b), "started paramserver\n") && strings.Contains(string(b), " tailor local: exited: exit status 1")
	}
	if !found {
		t.Error("no parameter server's log has its line and the supervisor's")
	}
}

// A secure run: certificates, a gossip key and etcd's passwords made in
// Out/certs; every process gets them as flags, the etcd is https://, the
// watch line carries the flags status needs.
func TestRunSecure(t *testing.T) {
	t.Setenv("FAKE_TAILOR_FAIL", "")
	cfg, stdout, stderr, log := testConfig(t, testShards(t))
	cfg.Secure = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := Run(ctx, cfg); err != nil {
		t.Fatalf("Run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	dir := filepath.Join(cfg.Out, "certs")
	secOf := func(pair string) string {
		return "--tls-ca " + filepath.Join(dir, "ca.pem") + " --tls-cert " + filepath.Join(dir, pair+".pem") + " --tls-key " + filepath.Join(dir, pair+"-key.pem") +
			" --etcd-ca " + filepath.Join(dir, "ca.pem") + " --etcd-cert " + filepath.Join(dir, "node.pem") + " --etcd-key " + filepath.Join(dir, "node-key.pem") +
			" --etcd-user tailor --etcd-password-file " + filepath.Join(dir, "etcd-password")
	}
	// tailor status with the operator's (admin) certificate
	if want := secOf("admin"); !regexp.MustCompile(`^run local: etcd https://127\.0\.0\.1:\d+; watch it with: tailor status --etcd https://\S+ --run local ` + regexp.QuoteMeta(want) + ` --watch 2s\nrun local: learning rate [^\n]+\ndashboard: http://127\.0\.0\.1:\d+/ \(sign in with the token in ` + regexp.QuoteMeta(filepath.Join(dir, "dashboard.token")) + `\)\n$`).MatchString(stdout.String()) {
		t.Errorf("stdout:\n%s\nwant the security flags %s", stdout, want)
	}
	if fi, err := os.Stat(filepath.Join(dir, "dashboard.token")); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() < 17 {
		t.Errorf("the dashboard's token file: %v, %v", fi, err)
	}
	// every process the node pair for etcd and the gossip key, then its
	// role's certificate for the roles' mutual TLS
	sec := secOf("node")
	procs := procLines(t, log)
	if n := strings.Count(procs, sec+" --gossip-key-file "+filepath.Join(dir, "gossip.key")); n != 5 {
		t.Errorf("%d processes got the security flags and the gossip key, want 5:\n%s", n, procs)
	}
	total := 0
	for _, role := range []string{"coordinator", "paramserver", "worker"} {
		n := 0
		for _, line := range strings.Split(procs, "\n") {
			if strings.HasPrefix(line, role+" ") && strings.Contains(line, "--tls-cert "+filepath.Join(dir, role+".pem")+" --tls-key "+filepath.Join(dir, role+"-key.pem")) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no %s process got its role's certificate:\n%s", role, procs)
		}
		total += n
	}
	if total != 5 {
		t.Errorf("%d processes got their role's certificate, want 5:\n%s", total, procs)
	}
	pw, err := os.ReadFile(filepath.Join(dir, "etcd-password"))
	if err != nil {
		t.Fatal(err)
	}
	if all := stdout.String() + stderr.String() + procs; strings.Contains(all, strings.TrimSpace(string(pw))) {
		t.Error("the output shows etcd's password")
	}
}

// With the embedded S3 store (in a process of its own: the server changes
// the working directory) a data folder is copied into the server, the
// spec names it and the checkpoints there, and the processes get the
// server's credentials in their environment.
func TestRunS3(t *testing.T) {
	if isolated(t) {
		return
	}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "FAKE_TAILOR_FAIL"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	cfg, stdout, stderr, log := testConfig(t, testShards(t))
	cfg.Store = StoreS3
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := Run(ctx, cfg); err != nil {
		t.Fatalf("Run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if n := strings.Count(procLines(t, log), " aws=set\n"); n != 5 {
		t.Errorf("%d processes have the S3 server's credentials, want 5:\n%s", n, procLines(t, log))
	}
	s := submitted(t, cfg.Out)
	if !strings.HasPrefix(s.Data, "s3://tailor/data?endpoint=http://127.0.0.1:") || !strings.HasPrefix(s.Checkpoints, "s3://tailor/checkpoints?endpoint=") {
		t.Errorf("the spec submitted: data %q, checkpoints %q; want the embedded server's", s.Data, s.Checkpoints)
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, "s3", "root", "tailor", "data", shard.ManifestName)); err != nil {
		t.Errorf("the data set's copy: %v", err)
	}
}

// A store that does not hold a data set fails the run before anything
// starts.
func TestRunNoDataSet(t *testing.T) {
	cfg, _, _, log := testConfig(t, t.TempDir())
	_, err := Run(context.Background(), cfg)
	if err == nil || !strings.HasPrefix(err.Error(), "data: ") {
		t.Fatalf("Run on an empty folder: %v, want a data: error", err)
	}
	if _, serr := os.Stat(log); serr == nil {
		t.Error("processes started")
	}
	if _, serr := os.Stat(filepath.Join(cfg.Out, "etcd")); serr == nil {
		t.Error("etcd started")
	}
}
