//go:build netlab

package netlab

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// labSetup builds the binaries and a small 32 px shard set, once per test.
func labSetup(t *testing.T) (cfg Config, labels int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the netlab tests need root (ip netns, tc)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	tailor, etcd, err := Build(ctx, "..", filepath.Join(dir, "bin"), model.BLAS == "openblas")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	data, err := Data(ctx, "", filepath.Join(dir, "data"), 32, 1024, log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.NewLocal(data)
	if err != nil {
		t.Fatal(err)
	}
	man, err := shard.LoadManifest(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	cfg = DefaultConfig()
	cfg.Tailor, cfg.Etcd, cfg.Data, cfg.Dir = tailor, etcd, data, filepath.Join(dir, "lab")
	cfg.Prefix = fmt.Sprintf("tt%d", os.Getpid()%100000)
	return cfg, len(man.Labels)
}

// noNamespaces fails if any namespace of the lab is left.
func noNamespaces(t *testing.T, prefix string) {
	t.Helper()
	ns, err := Namespaces(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) > 0 {
		t.Errorf("namespaces left behind: %v", ns)
		_ = Clean(context.Background(), prefix)
	}
}

// TestLab runs the small scenario (4 synthetic workers, 2 servers, 1
// Gbit/s links, sync, a few steps) with every role a process in a host of
// its own: the run makes progress, each worker pushes the whole model's
// gradient per step (the net's real shapes, uncompressed), every role's
// CPU time is read, and every namespace is gone afterwards. A
// scenario that cannot finish (its window is longer than its timeout)
// fails and leaves nothing behind either.
func TestLab(t *testing.T) {
	cfg, labels := labSetup(t)
	spec, err := netspec.Spec(model.DefaultConfig(32, labels))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	t.Run("small scenario", func(t *testing.T) {
		defer noNamespaces(t, cfg.Prefix)
		c := cfg
		c.Workers, c.Servers, c.Rate, c.Warmup, c.Steps, c.Timeout = 4, 2, 1e9, 2, 4, 4*time.Minute
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		row, err := Run(ctx, c, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s\n%s", Header, row.Markdown())
		if row.Steps < 4 {
			t.Errorf("%d steps in the window, want at least 4", row.Steps)
		}
		// a step of 4 workers × 32 images in at least the synthetic step
		// time: at most 128 / 0.21 img/s
		if max := 128 / c.Step.Seconds(); row.ImgPerSec <= 0 || row.ImgPerSec > max {
			t.Errorf("%.1f img/s, want more than 0 and at most %.0f", row.ImgPerSec, max)
		}
		if want := float64(4 * spec.Total()); math.Abs(row.PushBytes-want) > 0.01*want {
			t.Errorf("%.0f bytes pushed per step by a worker, want the model's %d floats × 4 = %.0f", row.PushBytes, spec.Total(), want)
		}
		// the synthetic step's sleep, undilated (k = 1), at least
		if row.ComputeS < 0.9*c.Step.Seconds() || row.BNSyncS <= 0 || row.PullS <= 0 {
			t.Errorf("worker's step: compute %.3f s, BN sync %.3f s, pull %.3f s: want the %v of compute at least, and some of each",
				row.ComputeS, row.BNSyncS, row.PullS, c.Step)
		}
		if row.CPUShare <= 0 || row.Coordinator <= 0 || row.Servers <= 0 || row.Workers <= 0 {
			t.Errorf("CPU shares %+v: want every role's above 0", row)
		}
	})

	t.Run("timeout cleans up", func(t *testing.T) {
		defer noNamespaces(t, cfg.Prefix)
		c := cfg
		c.Workers, c.Servers, c.Warmup, c.Steps, c.Timeout = 2, 1, 1000000, 1, 20*time.Second
		_, err := Run(context.Background(), c, log)
		if err == nil || !strings.Contains(err.Error(), "warm-up") {
			t.Fatalf("Run = %v, want the warm-up's timeout", err)
		}
	})
}
