package shard_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailorml/tailor/internal/s3test"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// Shards built into and read back from a real S3 server (versitygw): the
// same bytes as a local build, every checksum checked on the way back.

// writeImageTree writes n small PNGs into two label folders under a new dir.
func writeImageTree(t *testing.T, n int) string {
	t.Helper()
	src := t.TempDir()
	for i := range n {
		img := image.NewNRGBA(image.Rect(0, 0, 12, 10))
		for p := 0; p < len(img.Pix); p += 4 {
			img.Pix[p], img.Pix[p+1], img.Pix[p+2], img.Pix[p+3] = uint8(17*i+p), uint8(3*p), uint8(255-i), 255
		}
		img.Set(0, 0, color.NRGBA{uint8(i), 0, 0, 255})
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(src, []string{"red_dress", "blue_shirt"}[i%2])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("img%03d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

func TestS3BuildReadAndCorruption(t *testing.T) {
	src := writeImageTree(t, 24) // before Start: paths stay absolute anyway
	srv := s3test.Start(t)
	srv.SetEnv(t)
	bucket := srv.NewBucket(t)
	ctx := context.Background()

	cfg := shard.DefaultBuildConfig()
	cfg.Size, cfg.MinSide, cfg.Workers, cfg.MaxShardBytes = 8, 4, 2, 2000
	url := srv.StoreURL(bucket, "ds/clothes")
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	m, err := shard.Build(ctx, cfg, src, st, nil, nil)
	if err != nil {
		t.Fatalf("Build into %s: %v", url, err)
	}

	// The same build into a local directory gives the same bytes.
	local, err := store.NewLocal(filepath.Join(t.TempDir(), "ds"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shard.Build(ctx, cfg, src, local, nil, nil); err != nil {
		t.Fatalf("local Build: %v", err)
	}
	names, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	localNames, _ := local.List(ctx, "")
	if strings.Join(names, " ") != strings.Join(localNames, " ") || len(names) < 3 {
		t.Fatalf("S3 objects %q, local objects %q; want the same, several shards", names, localNames)
	}
	for _, n := range names {
		if !bytes.Equal(readObject(t, st, n), readObject(t, local, n)) {
			t.Errorf("%s differs between the S3 and the local build", n)
		}
	}

	// Read back through a fresh store, checking every checksum.
	st2, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := shard.LoadManifest(ctx, st2)
	if err != nil {
		t.Fatalf("LoadManifest: %v", err)
	}
	var total int64
	for _, s := range m2.Splits {
		recs, err := shard.ReadSplit(ctx, st2, m2, s.Name)
		if err != nil {
			t.Fatalf("ReadSplit(%s): %v", s.Name, err)
		}
		if int64(len(recs)) != s.Records {
			t.Errorf("split %s: read %d records, manifest says %d", s.Name, len(recs), s.Records)
		}
		total += int64(len(recs))
	}
	if total != m.Records() || total != 24 {
		t.Errorf("read %d records, built %d, want 24", total, m.Records())
	}

	// Re-upload one shard with a flipped byte: ReadShard must notice.
	info := m2.Splits[0].Shards[0]
	data := readObject(t, st2, info.Name)
	data[len(data)/2] ^= 0x01
	if err := st2.Put(ctx, info.Name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	err = shard.ReadShard(ctx, st2, info, m2, func(shard.Record) error { return nil })
	if !errors.Is(err, shard.ErrChecksum) {
		t.Errorf("ReadShard of a shard with a flipped byte = %v, want ErrChecksum", err)
	}
}

func readObject(t *testing.T, st store.Store, name string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", name, err)
	}
	return b
}
