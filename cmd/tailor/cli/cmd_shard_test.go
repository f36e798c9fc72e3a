package cli

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shardTestTree writes a tiny folder dataset with a train and a val split.
func shardTestTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for i, rel := range []string{"train/red_dress/a.png", "train/blue_dress/b.png", "val/red_shirt/c.png"} {
		img := image.NewNRGBA(image.Rect(0, 0, 10, 10))
		for p := range img.Pix {
			img.Pix[p] = uint8(40 * (i + 1))
			if p%4 == 3 {
				img.Pix[p] = 255 // opaque
			}
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(src, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "train/red_dress/notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

func runShardCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := RunContext(context.Background(), append([]string{"shard"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestShardBuildInspectVerify(t *testing.T) {
	src := shardTestTree(t)
	dst := filepath.Join(t.TempDir(), "ds")
	code, out, errs := runShardCLI(t, "build", "--size", "8", "--max-shard-bytes", "300", "--min-side", "4", src, dst)
	if code != 0 {
		t.Fatalf("build exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, want := range []string{"images    8x8x3, stretch", "train  2", "val    1", "not_image=1", "labels (4):", "dress"} {
		if !strings.Contains(out, want) {
			t.Errorf("build summary lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errs, "train  2/2  100.0%") {
		t.Errorf("no progress on stderr:\n%s", errs)
	}

	code, out, errs = runShardCLI(t, "inspect", "--verify", dst)
	if code != 0 || !strings.Contains(out, "all 3 shards ok") || !strings.Contains(out, "tailor-shards version 1") {
		t.Fatalf("inspect --verify exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}

	// A second build into the same place needs --overwrite.
	if code, _, errs := runShardCLI(t, "build", "--size", "8", "--min-side", "4", "--quiet", src, dst); code != 1 || !strings.Contains(errs, "--overwrite") {
		t.Errorf("rebuild exit %d, stderr:\n%s", code, errs)
	}

	// Damage one shard: verify must fail and name it.
	p := filepath.Join(dst, "shards", "val-00000.shard")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-8] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runShardCLI(t, "inspect", "--verify", dst)
	if code != 1 || !strings.Contains(out, "FAIL  shards/val-00000.shard") || !strings.Contains(errs, "1 of 3 shards failed") {
		t.Errorf("inspect --verify of a damaged shard: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
}

// TestShardBuildResizeAndLabels builds a labels.csv of ';'-separated labels
// with --resize pad, and refuses a whitespace separator that leaves ';' in
// the labels unless --allow-odd-labels.
func TestShardBuildResizeAndLabels(t *testing.T) {
	src := t.TempDir()
	img := image.NewNRGBA(image.Rect(0, 0, 20, 10))
	for p := range img.Pix {
		img.Pix[p] = 200
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "img"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"img/1.png", "img/2.png"} {
		if err := os.WriteFile(filepath.Join(src, filepath.FromSlash(f)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "labels.csv"), []byte("path,labels\nimg/1.png,dress;blue\nimg/2.png,red\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "ds")
	code, out, errs := runShardCLI(t, "build", "--size", "8", "--val-fraction", "0", "--resize", "pad", "--quiet", src, dst)
	if code != 0 {
		t.Fatalf("build exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, want := range []string{"images    8x8x3, pad", "labels (3):", "blue", "dress", "red"} {
		if !strings.Contains(out, want) {
			t.Errorf("build summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "dress;blue") {
		t.Errorf("label %q in the vocabulary:\n%s", "dress;blue", out)
	}

	dst2 := filepath.Join(t.TempDir(), "ds")
	code, out, errs = runShardCLI(t, "build", "--size", "8", "--label-sep", "space", "--quiet", src, dst2)
	if code != 1 || !strings.Contains(errs, `"dress;blue" (line 2)`) || !strings.Contains(errs, "--allow-odd-labels") {
		t.Errorf("--label-sep space: exit %d, want 1 and the label named\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	code, out, errs = runShardCLI(t, "build", "--size", "8", "--label-sep", "space", "--allow-odd-labels", "--quiet", src, dst2)
	if code != 0 || !strings.Contains(out, "dress;blue") {
		t.Errorf("--allow-odd-labels: exit %d, want 0 and the label kept\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
}

func TestShardUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string // in stdout+stderr
	}{
		{nil, 2, "Subcommands:"},
		{[]string{"--help"}, 0, "build SRC DST"},
		{[]string{"frobnicate"}, 2, `unknown subcommand "frobnicate"`},
		{[]string{"build", "--help"}, 0, "--max-shard-bytes"},
		{[]string{"build", "only-src"}, 2, "want SRC and DST"},
		{[]string{"build", "a", "b", "--size", "0"}, 2, "size 0"}, // flags after the arguments are read
		{[]string{"build", "a", "--size", "8", "b", "c"}, 2, "want SRC and DST, got 3 arguments"},
		{[]string{"build", "a", "b", "--sise", "8"}, 2, "flag provided but not defined: -sise"},
		{[]string{"build", "--size", "0", "a", "b"}, 2, "size 0"},
		{[]string{"build", "--max-shard-bytes", "12XB", "a", "b"}, 2, "unknown unit"},
		{[]string{"build", "--resize", "squash", "a", "b"}, 2, `resize "squash"`},
		{[]string{"build", "--label-sep", "tab", "a", "b"}, 2, `label separator "tab"`},
		{[]string{"build", "--help"}, 0, "--allow-odd-labels"},
		{[]string{"build", "/nonexistent/src", "s3://Bad_Bucket/x"}, 1, "bucket name"},
		{[]string{"build", "--s3-endpoint", "ftp://h", "/nonexistent/src", "s3://bucket/x"}, 1, `scheme "ftp"`},
		{[]string{"inspect"}, 2, "want DST"},
		{[]string{"inspect", "/nonexistent/ds"}, 1, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := runShardCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(out+errs, tt.want) {
				t.Errorf("exit %d (want %d), output lacks %q:\n%s%s", code, tt.code, tt.want, out, errs)
			}
		})
	}
}

func TestShardByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"64MiB", 64 << 20, true},
		{"64mib", 64 << 20, true},
		{"500KB", 500_000, true},
		{"1048576", 1 << 20, true},
		{"2 GiB", 2 << 30, true},
		{"10M", 10 << 20, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1", 0, false},
		{"1.5MiB", 0, false},
		{"99999999999GiB", 0, false},
	}
	for _, tt := range tests {
		var b shardByteSize
		err := b.Set(tt.in)
		if (err == nil) != tt.ok || (tt.ok && int64(b) != tt.want) {
			t.Errorf("Set(%q) = %d, %v; want %d ok=%v", tt.in, b, err, tt.want, tt.ok)
		}
	}
	for n, want := range map[int64]string{64 << 20: "64MiB", 1 << 30: "1GiB", 1000: "1000", 3 << 10: "3KiB"} {
		b := shardByteSize(n)
		if got := b.String(); got != want {
			t.Errorf("String(%d) = %q, want %q", n, got, want)
		}
	}
}
