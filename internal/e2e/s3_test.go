package e2e

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/internal/s3test"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// fashionImages composes a small labelled image tree (no shards) and
// returns its absolute path. Call it before s3test.Start, which changes the
// working directory.
func fashionImages(t *testing.T, size int) string {
	t.Helper()
	src, err := filepath.Abs("../../fashion/testdata")
	if err != nil {
		t.Fatal(err)
	}
	fc := fashion.DefaultConfig()
	fc.Source, fc.Out = src, filepath.Join(t.TempDir(), "images")
	fc.Size, fc.Train, fc.Val, fc.Test = size, 160, 48, 48
	if _, err := fashion.Generate(context.Background(), fc, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return fc.Out
}

// TestLocalClusterS3 trains with `tailor local` on shards that live only in
// a real S3 server (versitygw, in this test process): every process opens
// s3://bucket/prefix?endpoint=... and streams the shards from it, with the
// credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, inherited from
// `tailor local`. With a wrong secret the run fails at once, says that the
// credentials were refused, shows no secret and leaves nothing running.
func TestLocalClusterS3(t *testing.T) {
	bin := buildTailor(t) // before s3test.Start: go build needs the module directory
	images := fashionImages(t, 24)
	srv := s3test.Start(t)
	srv.SetEnv(t)
	bucket := srv.NewBucket(t)
	url := srv.StoreURL(bucket, "fashion/v1")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	bc := shard.DefaultBuildConfig()
	bc.Size, bc.MaxShardBytes = 24, 24*24*3*40 // several shards
	if _, err := shard.Build(ctx, bc, images, st, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	names, err := st.List(ctx, "shards/")
	if err != nil || len(names) < 3 {
		t.Fatalf("shards in S3: %v, %v; want several", names, err)
	}

	t.Run("train", func(t *testing.T) {
		out := t.TempDir()
		cmd := exec.CommandContext(ctx, bin, "local", "--verbose", "--out", out, "--data", url, "--workers", "2", "--ps", "2",
			"--epochs", "1", "--batch", "8", "--unit-size", "32")
		cmd.Dir = out // not the gateway's root
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("tailor local: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
		t.Logf("tailor local on S3: %v", time.Since(t0).Round(time.Millisecond))
		if !strings.Contains(stdout.String(), "run local finished") {
			t.Errorf("the run did not finish:\n%s", stdout.String())
		}
		b, err := model.Load(filepath.Join(out, "run", "model.tailor"))
		if err != nil {
			t.Fatalf("model: %v", err)
		}
		if got := b.Meta["data"]; got != url {
			t.Errorf("model trained on %q, want %q", got, url)
		}
		// both workers trained: they read their shards from S3, the only
		// place the shards are
		for _, w := range []string{"w0 ", "w1 "} {
			if !strings.Contains(stderr.String(), w) || !strings.Contains(stderr.String(), "run done") {
				t.Errorf("worker %q did not report:\n%s", w, stderr.String())
			}
		}
		if strings.Contains(stdout.String()+stderr.String(), srv.SecretKey) {
			t.Error("the output shows the secret key")
		}
		if out, _ := exec.Command("pgrep", "-f", bin).Output(); len(out) > 0 {
			t.Errorf("processes left running: %s", out)
		}
	})

	t.Run("wrong-credentials", func(t *testing.T) {
		out := t.TempDir()
		wrong := "wrong-" + srv.SecretKey[:8]
		cmd := exec.CommandContext(ctx, bin, "local", "--verbose", "--out", out, "--data", url, "--workers", "2", "--ps", "2",
			"--epochs", "1", "--batch", "8", "--unit-size", "32")
		cmd.Dir = out
		cmd.Env = append(os.Environ(), "AWS_SECRET_ACCESS_KEY="+wrong) // the last value wins
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		t0 := time.Now()
		err := cmd.Run()
		took := time.Since(t0)
		t.Logf("tailor local with a wrong secret failed in %v: %s", took.Round(time.Millisecond), strings.TrimSpace(stderr.String()))
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("tailor local with a wrong secret: %v, want exit status 1\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
		if !strings.Contains(stderr.String(), "refused the credentials") {
			t.Errorf("the error does not say the credentials were refused:\n%s", stderr.String())
		}
		if all := stdout.String() + stderr.String(); strings.Contains(all, wrong) || strings.Contains(all, srv.SecretKey) {
			t.Errorf("the output shows a secret:\n%s", all)
		}
		if took > 20*time.Second {
			t.Errorf("failing took %v; want it fast", took)
		}
		if out, _ := exec.Command("pgrep", "-f", bin).Output(); len(out) > 0 {
			t.Errorf("processes left running: %s", out)
		}
		if _, err := os.Stat(filepath.Join(out, "run", "model.tailor")); err == nil {
			t.Error("a model was written")
		}
	})
}

// TestS3EmbeddedLocal runs `tailor local` on its embedded S3 server
// (--store s3, the default, named here): the --data folder's shards are
// copied into it, and every process reads them, and writes and reads the
// checkpoints, through the S3 client; nothing goes to OUT/shards or
// OUT/checkpoints. The credentials reach the processes in their
// environment and show nowhere in the output. Interrupted after a
// checkpoint, the run resumes from it with --resume on the server's data
// in OUT/s3, on the same port (the run's spec names it); each time the
// server stops with the run and nothing is left running.
func TestS3EmbeddedLocal(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := func(extra ...string) []string {
		return append([]string{"--out", out, "--data", data, "--store", "s3", "--workers", "2", "--ps", "2", "--epochs", "2",
			"--batch", "8", "--unit-size", "32", "--checkpoint-every", "3"}, extra...)
	}
	r := startLocal(t, ctx, bin, nil, args()...)
	r.waitFor(regexp.MustCompile(`msg=checkpoint .*reason=steps step=6 `), 3*time.Minute)
	secret := childEnv(t, bin+" worker --id w0", "AWS_SECRET_ACCESS_KEY")
	if len(secret) < 32 {
		t.Errorf("the worker's AWS_SECRET_ACCESS_KEY has %d characters, want a random secret", len(secret))
	}
	if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = r.cmd.Wait()
	first := r.log.String()
	if strings.Contains(first, "run local finished") {
		t.Fatal("the run finished before it was interrupted")
	}
	addrBytes, err := os.ReadFile(filepath.Join(out, "s3", "addr"))
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimSpace(string(addrBytes))
	stopped := func(when string) {
		t.Helper()
		if out, _ := exec.Command("pgrep", "-f", bin).Output(); len(out) > 0 {
			t.Errorf("%s: processes left running: %s", when, out)
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s: the embedded S3 server still listens on %s", when, addr)
		}
	}
	stopped("after the interrupt")

	r = startLocal(t, ctx, bin, nil, args("--resume")...)
	text := r.wait("--resume")
	if !strings.Contains(text, "msg=resumed") || !strings.Contains(text, "run local finished") {
		t.Errorf("the run did not resume and finish:\n%s", text)
	}
	wantEpochs(t, out, 2)
	b, err := model.Load(filepath.Join(out, "run", "model.tailor"))
	if err != nil {
		t.Fatalf("model: %v", err)
	}
	if got, want := b.Meta["data"], "s3://tailor/data?endpoint=http://"+addr+"&region=us-east-1"; got != want {
		t.Errorf("model trained on %q, want %q", got, want)
	}
	if parts, _ := filepath.Glob(filepath.Join(out, "s3", "root", "tailor", "checkpoints", "local", "*", "*", "ps-000.bin")); len(parts) == 0 {
		t.Error("no checkpoint in the embedded S3 server's data")
	}
	for _, dir := range []string{"checkpoints", "shards"} {
		if _, err := os.Stat(filepath.Join(out, dir)); err == nil {
			t.Errorf("OUT/%s exists: the run used files", dir)
		}
	}
	for _, w := range []string{"w0 ", "w1 "} {
		if !strings.Contains(text, w) || !strings.Contains(text, "run done") {
			t.Errorf("worker %q did not report", w)
		}
	}
	if strings.Contains(first+text, secret) {
		t.Error("the output shows the embedded S3 server's secret key")
	}
	stopped("after the run")
}

// childEnv returns the variable key of the environment of the process
// whose command line starts with cmdline (Linux: /proc/PID/environ).
func childEnv(t *testing.T, cmdline, key string) string {
	t.Helper()
	pid, err := exec.Command("pgrep", "-f", cmdline).Output()
	if err != nil {
		t.Fatalf("%s not found: %v", cmdline, err)
	}
	environ, err := os.ReadFile(filepath.Join("/proc", strings.Fields(string(pid))[0], "environ"))
	if err != nil {
		t.Fatal(err)
	}
	var val string
	for kv := range strings.SplitSeq(string(environ), "\x00") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			val = v // the last one counts
		}
	}
	if val == "" {
		t.Fatalf("%s has no %s in its environment", cmdline, key)
	}
	return val
}
