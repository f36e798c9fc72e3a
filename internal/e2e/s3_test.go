package e2e

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
		cmd := exec.CommandContext(ctx, bin, "local", "--out", out, "--data", url, "--workers", "2", "--ps", "2",
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
		cmd := exec.CommandContext(ctx, bin, "local", "--out", out, "--data", url, "--workers", "2", "--ps", "2",
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
