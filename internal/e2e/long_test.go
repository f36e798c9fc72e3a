//go:build chaos || soak

package e2e

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// chaosShards is a larger set than testShards, so that test mAP means
// something: 1200 training, 200 validation and 400 test images at 24 px.
func chaosShards(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	fc := fashion.DefaultConfig()
	fc.Source, fc.Out = "../../fashion/testdata", filepath.Join(dir, "images")
	fc.Size, fc.Train, fc.Val, fc.Test = 24, 1200, 200, 400
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := fashion.Generate(context.Background(), fc, log); err != nil {
		t.Fatal(err)
	}
	bc := shard.DefaultBuildConfig()
	bc.Size = 24
	st, err := store.NewLocal(filepath.Join(dir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shard.Build(context.Background(), bc, fc.Out, st, nil, log); err != nil {
		t.Fatal(err)
	}
	return st.Root()
}

func testMAP(t *testing.T, out string) float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "run", "test_metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^mAP +([0-9.]+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no mAP in test_metrics.txt:\n%s", b)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
