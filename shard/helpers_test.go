package shard

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/tailorml/tailor/store"
)

// solid returns a w x h image of one colour.
func solid(w, h int, c color.Color) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, c)
		}
	}
	return img
}

func encodePNG(tb testing.TB, img image.Image) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(tb testing.TB, img image.Image) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func encodeGIF(tb testing.TB, img image.Image) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := gif.Encode(&b, img, nil); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// writeFile writes data at dir/rel, making folders.
func writeFile(tb testing.TB, dir, rel string, data []byte) {
	tb.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
}

var (
	red   = color.NRGBA{255, 0, 0, 255}
	green = color.NRGBA{0, 255, 0, 255}
	blue  = color.NRGBA{0, 0, 255, 255}
	gray  = color.NRGBA{128, 128, 128, 255}
)

// testConfig is a small, fast build configuration.
func testConfig(tb testing.TB) BuildConfig {
	tb.Helper()
	cfg := DefaultBuildConfig()
	cfg.Size = 8
	cfg.MinSide = 4
	cfg.Workers = 2
	return cfg
}

// newStore returns a store.Local in a fresh temporary folder.
func newStore(tb testing.TB) *store.Local {
	tb.Helper()
	st, err := store.NewLocal(filepath.Join(tb.TempDir(), "dst"))
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// build runs Build and fails the test on error.
func build(tb testing.TB, cfg BuildConfig, src string, dst store.Store) *Manifest {
	tb.Helper()
	m, err := Build(context.Background(), cfg, src, dst, nil, nil)
	if err != nil {
		tb.Fatalf("Build: %v", err)
	}
	return m
}

// bySource reads a split and indexes its records by source path.
func bySource(tb testing.TB, st store.Store, m *Manifest, split string) map[string]Record {
	tb.Helper()
	recs, err := ReadSplit(context.Background(), st, m, split)
	if err != nil {
		tb.Fatalf("ReadSplit(%s): %v", split, err)
	}
	out := map[string]Record{}
	for _, r := range recs {
		out[r.Source] = r
	}
	return out
}

// labelNames maps a record's label indices back to names.
func labelNames(m *Manifest, r Record) []string {
	names := []string{}
	for _, l := range r.Labels {
		names = append(names, m.Labels[l])
	}
	return names
}
