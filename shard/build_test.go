package shard

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"maps"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/image/draw"

	"github.com/tailorml/tailor/store"
)

// splitTree writes a small dataset with train, val and test folders.
func splitTree(tb testing.TB) string {
	tb.Helper()
	src := tb.TempDir()
	writeFile(tb, src, "train/female_blue_dress/a.png", encodePNG(tb, solid(16, 16, blue)))
	writeFile(tb, src, "train/female_blue_dress/b.jpg", encodeJPEG(tb, solid(12, 20, blue)))
	writeFile(tb, src, "train/red_shirt/c.gif", encodeGIF(tb, solid(10, 10, red)))
	writeFile(tb, src, "train/red_shirt/d.png", encodePNG(tb, solid(9, 30, red)))
	writeFile(tb, src, "val/black_jeans/e.png", encodePNG(tb, solid(8, 8, color.Black)))
	writeFile(tb, src, "val/blue_dress/f.png", encodePNG(tb, solid(8, 8, blue)))
	writeFile(tb, src, "test/red_dress/g.png", encodePNG(tb, solid(8, 8, red)))
	return src
}

func TestBuildRoundTrip(t *testing.T) {
	src := splitTree(t)
	st := newStore(t)
	m := build(t, testConfig(t), src, st)

	loaded, err := LoadManifest(context.Background(), st)
	if err != nil {
		t.Fatalf("LoadManifest: %v", err)
	}
	if wantLabels := []string{"black", "blue", "dress", "female", "jeans", "red", "shirt"}; !slices.Equal(loaded.Labels, wantLabels) {
		t.Errorf("labels = %q, want %q", loaded.Labels, wantLabels)
	}
	if loaded.Width != 8 || loaded.Height != 8 || loaded.Channels != 3 {
		t.Errorf("geometry = %dx%dx%d, want 8x8x3", loaded.Width, loaded.Height, loaded.Channels)
	}
	var names []string
	for _, s := range loaded.Splits {
		names = append(names, fmt.Sprintf("%s:%d@%d", s.Name, s.Records, s.FirstID))
	}
	if got, want := strings.Join(names, " "), "train:4@0 val:2@4 test:1@6"; got != want {
		t.Errorf("splits = %s, want %s", got, want)
	}

	want := map[string]struct {
		labels []string
		rgb    color.NRGBA
	}{
		"train/female_blue_dress/a.png": {[]string{"blue", "dress", "female"}, blue},
		"train/female_blue_dress/b.jpg": {[]string{"blue", "dress", "female"}, blue},
		"train/red_shirt/c.gif":         {[]string{"red", "shirt"}, red},
		"train/red_shirt/d.png":         {[]string{"red", "shirt"}, red},
		"val/black_jeans/e.png":         {[]string{"black", "jeans"}, color.NRGBA{0, 0, 0, 255}},
		"val/blue_dress/f.png":          {[]string{"blue", "dress"}, blue},
		"test/red_dress/g.png":          {[]string{"dress", "red"}, red},
	}
	ids := map[uint64]bool{}
	for _, split := range []string{"train", "val", "test"} {
		for src, r := range bySource(t, st, loaded, split) {
			w, ok := want[src]
			if !ok {
				t.Errorf("unexpected record %s", src)
				continue
			}
			delete(want, src)
			ids[r.ID] = true
			if got := labelNames(loaded, r); !slices.Equal(got, w.labels) {
				t.Errorf("%s: labels %q, want %q", src, got, w.labels)
			}
			if len(r.Pixels) != 8*8*3 {
				t.Fatalf("%s: %d pixel bytes, want 192", src, len(r.Pixels))
			}
			for i := 0; i < len(r.Pixels); i += 3 {
				// JPEG is lossy; the others are exact.
				if !near(r.Pixels[i], w.rgb.R, 4) || !near(r.Pixels[i+1], w.rgb.G, 4) || !near(r.Pixels[i+2], w.rgb.B, 4) {
					t.Errorf("%s: pixel %d = %v, want %v", src, i/3, r.Pixels[i:i+3], w.rgb)
					break
				}
			}
		}
	}
	if len(want) != 0 {
		t.Errorf("records missing: %v", slices.Collect(maps.Keys(want)))
	}
	if len(ids) != 7 || !ids[0] || !ids[6] {
		t.Errorf("ids = %v, want 0..6", ids)
	}
	// Per-label counts of train: blue 2, dress 2, female 2, red 2, shirt 2.
	if got, want := loaded.Splits[0].LabelCounts, []int64{0, 2, 2, 2, 0, 2, 2}; !slices.Equal(got, want) {
		t.Errorf("train label counts = %v, want %v", got, want)
	}
	if m.Splits[0].Shards[0].Name != "shards/train-00000.shard" {
		t.Errorf("first shard name = %q", m.Splits[0].Shards[0].Name)
	}
}

func near(a, b uint8, tol int) bool {
	d := int(a) - int(b)
	return d >= -tol && d <= tol
}

func TestBuildMeanStd(t *testing.T) {
	src := t.TempDir()
	// Train: one red and one blue image. Per channel over all pixels:
	// R mean .5 std .5, G mean 0 std 0, B mean .5 std .5.
	writeFile(t, src, "train/a/1.png", encodePNG(t, solid(8, 8, red)))
	writeFile(t, src, "train/b/2.png", encodePNG(t, solid(8, 8, blue)))
	// Val pixels must not count.
	writeFile(t, src, "val/a/3.png", encodePNG(t, solid(8, 8, green)))
	m := build(t, testConfig(t), src, newStore(t))
	if want := []float64{0.5, 0, 0.5}; !slices.Equal(m.Mean, want) {
		t.Errorf("mean = %v, want %v", m.Mean, want)
	}
	if want := []float64{0.5, 0, 0.5}; !slices.Equal(m.Std, want) {
		t.Errorf("std = %v, want %v", m.Std, want)
	}
}

func TestBuildDeterministic(t *testing.T) {
	src := t.TempDir()
	for i := range 30 {
		c := color.NRGBA{uint8(i * 8), uint8(255 - i*8), uint8(i * 3), 255}
		dir := []string{"red_dress", "blue_jeans", "black_shirt"}[i%3]
		writeFile(t, src, fmt.Sprintf("%s/img%02d.png", dir, i), encodePNG(t, solid(10+i, 12, c)))
	}
	var outs []map[string][]byte
	for _, workers := range []int{1, 4} {
		cfg := testConfig(t)
		cfg.Workers = workers
		cfg.MaxShardBytes = 2000 // several shards
		st := newStore(t)
		build(t, cfg, src, st)
		files := map[string][]byte{}
		names, err := st.List(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(st.Root(), n))
			if err != nil {
				t.Fatal(err)
			}
			files[n] = b
		}
		outs = append(outs, files)
	}
	if len(outs[0]) < 4 {
		t.Fatalf("only %d files; want several shards", len(outs[0]))
	}
	if !maps.EqualFunc(outs[0], outs[1], bytes.Equal) {
		t.Errorf("builds with 1 and 4 workers differ: %v vs %v", slices.Sorted(maps.Keys(outs[0])), slices.Sorted(maps.Keys(outs[1])))
	}
}

func TestBuildShardSizeBound(t *testing.T) {
	src := t.TempDir()
	for i := range 20 {
		writeFile(t, src, fmt.Sprintf("a_b/%02d.png", i), encodePNG(t, solid(8, 8, gray)))
	}
	cfg := testConfig(t)
	cfg.ValFraction = 0
	cfg.MaxShardBytes = 1000
	st := newStore(t)
	m := build(t, cfg, src, st)
	s := m.Splits[0]
	if len(s.Shards) < 3 {
		t.Fatalf("%d shards, want at least 3", len(s.Shards))
	}
	for _, sh := range s.Shards {
		if sh.Bytes > cfg.MaxShardBytes {
			t.Errorf("%s: %d bytes > max %d", sh.Name, sh.Bytes, cfg.MaxShardBytes)
		}
	}
	recs, err := ReadSplit(context.Background(), st, m, "train")
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.ID != uint64(i) {
			t.Fatalf("record %d has id %d", i, r.ID)
		}
	}
	cfg.MaxShardBytes = headerSize + int64(recordSize(0, 0, 8*8*3)) // too small for any real path
	if _, err := Build(context.Background(), cfg, src, newStore(t), nil, nil); err == nil || !strings.Contains(err.Error(), "max shard bytes") {
		t.Errorf("Build with a too small shard size: error = %v", err)
	}
}

func TestVocabularyByteOrder(t *testing.T) {
	src := t.TempDir()
	for _, dir := range []string{"Zebra_a", "blå_B", "ab_a", "é", "10_9", "b-c.d"} {
		writeFile(t, src, "train/"+dir+"/x.png", encodePNG(t, solid(8, 8, gray)))
	}
	m := build(t, testConfig(t), src, newStore(t))
	want := []string{"10", "9", "B", "Zebra", "a", "ab", "b-c.d", "blå", "é"}
	if !slices.Equal(m.Labels, want) {
		t.Errorf("labels = %q, want %q", m.Labels, want)
	}
}

func TestSplitDetection(t *testing.T) {
	png8 := func(tb testing.TB) []byte { return encodePNG(tb, solid(8, 8, gray)) }
	tests := []struct {
		name    string
		files   []string
		wantErr string
		want    string // split:records list
	}{
		{"train only", []string{"train/a/1.png"}, "", "train:1"},
		{"train and test", []string{"train/a/1.png", "test/a/2.png"}, "", "train:1 test:1"},
		{"empty val folder", []string{"train/a/1.png", "val/"}, "", "train:1 val:0"},
		{"val without train", []string{"val/a/1.png", "test/a/2.png"}, "no train/ folder", ""},
		{"label folder beside splits", []string{"train/a/1.png", "blue_dress/2.png"}, "also folder", ""},
		{"readme beside splits", []string{"train/a/1.png", "README.md"}, "", "train:1"},
		{"Train is not a split", []string{"Train/a/1.png"}, "", "train:1 val:0"},
		{"empty train", []string{"train/", "val/a/1.png"}, "no usable images", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			for _, f := range tt.files {
				if strings.HasSuffix(f, "/") {
					os.MkdirAll(filepath.Join(src, f), 0o755)
				} else if strings.HasSuffix(f, ".png") {
					writeFile(t, src, f, png8(t))
				} else {
					writeFile(t, src, f, []byte("text"))
				}
			}
			cfg := testConfig(t)
			cfg.ValFraction = 0.000001 // a val split exists but gets nothing
			m, err := Build(context.Background(), cfg, src, newStore(t), nil, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range m.Splits {
				got = append(got, fmt.Sprintf("%s:%d", s.Name, s.Records))
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("splits = %s, want %s", strings.Join(got, " "), tt.want)
			}
		})
	}
}

func TestReadmeBesideSplitsIsCounted(t *testing.T) {
	src := t.TempDir()
	writeFile(t, src, "train/a/1.png", encodePNG(t, solid(8, 8, gray)))
	writeFile(t, src, "README.md", []byte("hi"))
	writeFile(t, src, ".DS_Store", []byte("x"))
	m := build(t, testConfig(t), src, newStore(t))
	if want := map[string]int64{SkipOutsideSplit: 1, SkipHidden: 1}; !maps.Equal(m.Skipped, want) {
		t.Errorf("top-level skipped = %v, want %v", m.Skipped, want)
	}
	cfg := testConfig(t)
	cfg.Strict = true
	if _, err := Build(context.Background(), cfg, src, newStore(t), nil, nil); !errors.Is(err, ErrBadInput) {
		t.Errorf("strict build error = %v, want ErrBadInput", err)
	}
}

func TestValFractionSplit(t *testing.T) {
	src := t.TempDir()
	const n = 60
	for i := range n {
		writeFile(t, src, fmt.Sprintf("lab%d/%03d.png", i%4, i), encodePNG(t, solid(8, 8, gray)))
	}
	for _, frac := range []float64{0, 0.2, 0.5} {
		t.Run(fmt.Sprint(frac), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ValFraction = frac
			st := newStore(t)
			m := build(t, cfg, src, st)
			if frac == 0 {
				if len(m.Splits) != 1 {
					t.Fatalf("splits = %d, want train only", len(m.Splits))
				}
				if m.Splits[0].Records != n {
					t.Errorf("train records = %d, want %d", m.Splits[0].Records, n)
				}
				return
			}
			if len(m.Splits) != 2 || m.Splits[1].Name != SplitVal {
				t.Fatalf("splits = %+v, want train and val", m.Splits)
			}
			if m.Build.SplitBy != "path-hash" || m.Build.ValFraction != frac {
				t.Errorf("build info = %+v", m.Build)
			}
			for _, split := range []string{SplitTrain, SplitVal} {
				for src := range bySource(t, st, m, split) {
					if got := splitByHash(src, frac); got != (split == SplitVal) {
						t.Errorf("%s is in %s but the hash says val=%v", src, split, got)
					}
				}
			}
			val := float64(m.Splits[1].Records) / n
			if math.Abs(val-frac) > 0.2 {
				t.Errorf("val share %.2f far from %.2f", val, frac)
			}
		})
	}
}

func TestSplitByHashIsStable(t *testing.T) {
	// Pinned values: changing the hash would reshuffle existing datasets.
	tests := []struct {
		rel  string
		frac float64
		want bool
	}{
		{"blue_dress/1.jpg", 0.2, false},
		{"blue_dress/2.jpg", 0.2, false},
		{"red_shirt/7.png", 0.2, true},
		{"anything", 0, false},
	}
	for _, tt := range tests {
		if got := splitByHash(tt.rel, tt.frac); got != tt.want {
			t.Errorf("splitByHash(%q, %v) = %v, want %v", tt.rel, tt.frac, got, tt.want)
		}
	}
}

// badTree writes one good image and one of each kind of bad input.
func badTree(tb testing.TB) (src string, wantSkipped map[string]int64) {
	tb.Helper()
	src = tb.TempDir()
	good := encodePNG(tb, solid(8, 8, gray))
	writeFile(tb, src, "train/blue_dress/good.png", good)
	writeFile(tb, src, "train/blue_dress/corrupt.jpg", []byte("\xff\xd8\xff\xe0 not really a jpeg"))
	writeFile(tb, src, "train/blue_dress/truncated.png", good[:len(good)/2])
	writeFile(tb, src, "train/blue_dress/empty.png", nil)
	writeFile(tb, src, "train/blue_dress/notes.txt", []byte("hello"))
	writeFile(tb, src, "train/blue_dress/text.png", []byte("plain text, png name"))
	writeFile(tb, src, "train/blue_dress/.DS_Store", []byte{0, 0, 0, 1})
	writeFile(tb, src, "train/blue_dress/._good.png", []byte{0, 5, 22, 7})
	writeFile(tb, src, "train/blue_dress/tiny.png", encodePNG(tb, solid(2, 2, gray)))
	writeFile(tb, src, "train/blue__dress/x.png", good)
	writeFile(tb, src, "train/_dress/x.png", good)
	writeFile(tb, src, "train/light blue_dress/x.png", good)
	writeFile(tb, src, "train/bl\x01ue_dress/x.png", good)
	writeFile(tb, src, "train/loose.png", good)
	if err := os.MkdirAll(filepath.Join(src, "train/empty_folder"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(src, "train/blue_dress"), filepath.Join(src, "train/link_dir")); err != nil {
		tb.Fatal(err)
	}
	return src, map[string]int64{
		SkipCorrupt:    2,
		SkipEmptyFile:  1,
		SkipNotImage:   2,
		SkipHidden:     2,
		SkipTooSmall:   1,
		SkipBadLabel:   4,
		SkipNoLabelDir: 1,
		SkipEmptyDir:   1,
		SkipNotRegular: 1,
	}
}

func TestBuildBadInputsAreCounted(t *testing.T) {
	src, want := badTree(t)
	cfg := testConfig(t)
	st := newStore(t)
	m := build(t, cfg, src, st)
	train := m.Splits[0]
	if train.Records != 1 {
		t.Errorf("train records = %d, want 1", train.Records)
	}
	if !maps.Equal(train.Skipped, want) {
		t.Errorf("skipped = %v\nwant      %v", train.Skipped, want)
	}
	if !slices.Equal(m.Labels, []string{"blue", "dress"}) {
		t.Errorf("labels = %q, want [blue dress]", m.Labels)
	}
	recs := bySource(t, st, m, SplitTrain)
	if r, ok := recs["train/blue_dress/good.png"]; !ok || !slices.Equal(labelNames(m, r), []string{"blue", "dress"}) {
		t.Errorf("good record = %+v, %v", r, ok)
	}
}

func TestBuildStrictStopsOnEachBadInput(t *testing.T) {
	good := func(tb testing.TB) []byte { return encodePNG(tb, solid(8, 8, gray)) }
	cases := map[string]func(tb testing.TB, src string){
		"corrupt":      func(tb testing.TB, src string) { writeFile(tb, src, "a/x.jpg", []byte("\xff\xd8garbage")) },
		"empty file":   func(tb testing.TB, src string) { writeFile(tb, src, "a/x.png", nil) },
		"not image":    func(tb testing.TB, src string) { writeFile(tb, src, "a/x.txt", []byte("x")) },
		"too small":    func(tb testing.TB, src string) { writeFile(tb, src, "a/x.png", encodePNG(tb, solid(1, 9, gray))) },
		"bad label":    func(tb testing.TB, src string) { writeFile(tb, src, "a__b/x.png", good(tb)) },
		"no label dir": func(tb testing.TB, src string) { writeFile(tb, src, "x.png", good(tb)) },
		"empty folder": func(tb testing.TB, src string) { os.MkdirAll(filepath.Join(src, "nothing"), 0o755) },
	}
	for name, add := range cases {
		t.Run(name, func(t *testing.T) {
			src := t.TempDir()
			writeFile(t, src, "ok/good.png", good(t))
			writeFile(t, src, ".DS_Store", []byte("hidden files never fail a strict build"))
			cfg := testConfig(t)
			cfg.Strict = true
			cfg.ValFraction = 0
			build(t, cfg, src, newStore(t)) // clean so far
			add(t, src)
			if _, err := Build(context.Background(), cfg, src, newStore(t), nil, nil); !errors.Is(err, ErrBadInput) {
				t.Errorf("error = %v, want ErrBadInput", err)
			}
		})
	}
}

func TestBuildCSV(t *testing.T) {
	src := t.TempDir()
	img := encodePNG(t, solid(8, 8, gray))
	writeFile(t, src, "images/a.png", img)
	writeFile(t, src, "images/b.png", img)
	writeFile(t, src, "images/c.png", img)
	writeFile(t, src, "images/d.png", img)
	writeFile(t, src, "images/f.png", img)
	writeFile(t, src, "images/e.txt", []byte("not an image"))
	writeFile(t, src, "images/not-listed.png", img)
	csv := "\uFEFFid,Path,labels\n" +
		"1,images/a.png,red dress\n" +
		"2,images/b.png,  dress   blue  dress \n" +
		"3,images/c.png,\n" + // an empty label set is allowed
		"4,images/missing.png,red\n" +
		"5,../outside.png,red\n" +
		"6,/abs/path.png,red\n" +
		"7,images/a.png,blue\n" + // duplicate path
		"8,images/d.png,bl/ue\n" +
		"9,images/e.txt,red\n" +
		"10,./images//d.png,t_shirt\n" + // cleans to images/d.png: a duplicate of the (bad) row 8
		"11,images/f.png,t_shirt\n" // '_' is allowed in CSV labels
	writeFile(t, src, "labels.csv", []byte(csv))
	cfg := testConfig(t)
	cfg.ValFraction = 0
	st := newStore(t)
	m := build(t, cfg, src, st)
	if m.Splits[0].Input != "csv" {
		t.Errorf("input = %q, want csv", m.Splits[0].Input)
	}
	wantSkipped := map[string]int64{SkipMissing: 1, SkipBadPath: 2, SkipDuplicate: 2, SkipBadLabel: 1, SkipNotImage: 1}
	if !maps.Equal(m.Splits[0].Skipped, wantSkipped) {
		t.Errorf("skipped = %v\nwant      %v", m.Splits[0].Skipped, wantSkipped)
	}
	if !slices.Equal(m.Labels, []string{"blue", "dress", "red", "t_shirt"}) {
		t.Errorf("labels = %q", m.Labels)
	}
	recs := bySource(t, st, m, SplitTrain)
	want := map[string][]string{
		"images/a.png": {"dress", "red"},
		"images/b.png": {"blue", "dress"},
		"images/c.png": {},
		"images/f.png": {"t_shirt"},
	}
	if len(recs) != len(want) {
		t.Errorf("records %v, want %v", slices.Sorted(maps.Keys(recs)), slices.Sorted(maps.Keys(want)))
	}
	for src, labels := range want {
		if got := labelNames(m, recs[src]); !slices.Equal(got, labels) {
			t.Errorf("%s: labels %q, want %q", src, got, labels)
		}
	}
	if m.Splits[0].Unlabeled != 1 {
		t.Errorf("unlabeled = %d, want 1", m.Splits[0].Unlabeled)
	}
}

func TestBuildCSVFileAndSplitCSV(t *testing.T) {
	src := t.TempDir()
	img := encodePNG(t, solid(8, 8, gray))
	writeFile(t, src, "train/x/a.png", img)
	writeFile(t, src, "train/labels.csv", []byte("path,labels\nx/a.png,cat\n"))
	writeFile(t, src, "val/b_dog/b.png", img) // folder tree in val, CSV in train
	m := build(t, testConfig(t), src, newStore(t))
	if m.Splits[0].Input != "csv" || m.Splits[1].Input != "folders" {
		t.Errorf("inputs = %s, %s; want csv, folders", m.Splits[0].Input, m.Splits[1].Input)
	}
	if !slices.Equal(m.Labels, []string{"b", "cat", "dog"}) {
		t.Errorf("labels = %q", m.Labels)
	}

	// SRC may also be the CSV file itself.
	m = build(t, testConfig(t), filepath.Join(src, "train", "labels.csv"), newStore(t))
	if m.Records() != 1 || m.Labels[0] != "cat" {
		t.Errorf("CSV-file source: records %d labels %q", m.Records(), m.Labels)
	}
}

func TestBuildCSVErrors(t *testing.T) {
	tests := map[string]string{
		"no header":      "",
		"missing column": "path,tags\na.png,x\n",
		"two path cols":  "path,path,labels\n",
		"bad quoting":    "path,labels\n\"a.png,x\n",
		"field count":    "path,labels\na.png,x,extra\n",
	}
	for name, csv := range tests {
		t.Run(name, func(t *testing.T) {
			src := t.TempDir()
			writeFile(t, src, "a.png", encodePNG(t, solid(8, 8, gray)))
			writeFile(t, src, "labels.csv", []byte(csv))
			if _, err := Build(context.Background(), testConfig(t), src, newStore(t), nil, nil); err == nil {
				t.Error("Build succeeded, want an error")
			}
		})
	}
}

func TestStretchKeepsNoAspect(t *testing.T) {
	// A 32x8 image: left half red, right half blue. Stretched to 8x8, the
	// left columns are red and the right ones blue on every row.
	img := image.NewNRGBA(image.Rect(0, 0, 32, 8))
	for y := range 8 {
		for x := range 32 {
			if x < 16 {
				img.Set(x, y, red)
			} else {
				img.Set(x, y, blue)
			}
		}
	}
	pix, reason, err := decodeImage(encodePNG(t, img), imageLimits{size: 8, minSide: 1, maxPixels: 1 << 20, interp: mustInterp(t)})
	if reason != "" {
		t.Fatalf("decode: %s %v", reason, err)
	}
	for y := range 8 {
		l := pix[(y*8+0)*3 : (y*8+0)*3+3]
		r := pix[(y*8+7)*3 : (y*8+7)*3+3]
		if !bytes.Equal(l, []byte{255, 0, 0}) || !bytes.Equal(r, []byte{0, 0, 255}) {
			t.Fatalf("row %d: left %v right %v, want red and blue", y, l, r)
		}
	}
}

func TestAlphaOverWhite(t *testing.T) {
	img := solid(8, 8, color.NRGBA{255, 0, 0, 0}) // fully transparent red
	img.Set(0, 0, color.NRGBA{0, 0, 255, 255})
	half := solid(8, 8, color.NRGBA{0, 0, 0, 128}) // half-transparent black
	for _, tt := range []struct {
		name string
		img  image.Image
		want []byte // pixel (7,7)
	}{
		{"transparent", img, []byte{255, 255, 255}},
		{"half", half, []byte{127, 127, 127}},
	} {
		pix, reason, err := decodeImage(encodePNG(t, tt.img), imageLimits{size: 8, minSide: 1, maxPixels: 1 << 20, interp: mustInterp(t)})
		if reason != "" {
			t.Fatalf("%s: decode: %s %v", tt.name, reason, err)
		}
		if got := pix[len(pix)-3:]; !bytes.Equal(got, tt.want) {
			t.Errorf("%s: pixel = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDecodeLimits(t *testing.T) {
	lim := imageLimits{size: 4, minSide: 4, maxPixels: 100, interp: mustInterp(t)}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"ok", encodePNG(t, solid(10, 10, gray)), ""},
		{"too small", encodePNG(t, solid(3, 10, gray)), SkipTooSmall},
		{"too many pixels", encodePNG(t, solid(11, 10, gray)), SkipTooLarge},
		{"empty", nil, SkipEmptyFile},
		{"text", []byte("hello world"), SkipNotImage},
		{"bomb header", pngHeader(100000, 100000), SkipTooLarge},
	}
	for _, tt := range tests {
		_, reason, err := decodeImage(tt.data, lim)
		if reason != tt.want {
			t.Errorf("%s: reason %q (%v), want %q", tt.name, reason, err, tt.want)
		}
	}
}

// pngHeader is a PNG signature and IHDR chunk claiming a w x h RGBA image.
func pngHeader(w, h uint32) []byte {
	ihdr := binary.BigEndian.AppendUint32([]byte("IHDR"), w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0) // 8 bit RGBA, no interlace
	b := []byte("\x89PNG\r\n\x1a\n")
	b = binary.BigEndian.AppendUint32(b, 13)
	b = append(b, ihdr...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(ihdr))
}

func mustInterp(tb testing.TB) draw.Interpolator {
	tb.Helper()
	in, err := interpolator(InterpCatmullRom)
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

func TestDestinationNotEmpty(t *testing.T) {
	src := splitTree(t)
	st := newStore(t)
	cfg := testConfig(t)
	cfg.MaxShardBytes = 700 // one record per shard
	first := build(t, cfg, src, st)
	if _, err := Build(context.Background(), testConfig(t), src, st, nil, nil); !errors.Is(err, ErrDestinationNotEmpty) {
		t.Fatalf("second build error = %v, want ErrDestinationNotEmpty", err)
	}
	// Overwrite with bigger shards: the stale small ones must go.
	cfg = testConfig(t)
	cfg.Overwrite = true
	second := build(t, cfg, src, st)
	names, err := st.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ManifestName}
	for _, s := range second.Splits {
		for _, sh := range s.Shards {
			want = append(want, sh.Name)
		}
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("after overwrite store has %q, want %q", names, want)
	}
	if len(first.Splits[0].Shards) <= len(second.Splits[0].Shards) {
		t.Errorf("test setup: first build has %d train shards, second %d", len(first.Splits[0].Shards), len(second.Splits[0].Shards))
	}
}

func TestDestinationInsideSource(t *testing.T) {
	src := splitTree(t)
	st, err := store.NewLocal(filepath.Join(src, "out"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), testConfig(t), src, st, nil, nil); err == nil || !strings.Contains(err.Error(), "inside the source") {
		t.Errorf("error = %v, want destination inside source", err)
	}
}

func TestBuildProgressAndCancel(t *testing.T) {
	src := splitTree(t)
	var out bytes.Buffer
	if _, err := Build(context.Background(), testConfig(t), src, newStore(t), &out, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"train  4/4  100.0%", "val  2/2", "test  1/1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress output lacks %q:\n%s", want, out.String())
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st := newStore(t)
	if _, err := Build(ctx, testConfig(t), src, st, nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled build error = %v, want context.Canceled", err)
	}
	if _, err := st.Stat(context.Background(), ManifestName); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("canceled build left a manifest: %v", err)
	}
}

func TestBuildConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*BuildConfig)
		ok   bool
	}{
		{"default", func(*BuildConfig) {}, true},
		{"size 0", func(c *BuildConfig) { c.Size = 0 }, false},
		{"size huge", func(c *BuildConfig) { c.Size = 5000 }, false},
		{"shard too small", func(c *BuildConfig) { c.MaxShardBytes = 1000 }, false},
		{"shard too big", func(c *BuildConfig) { c.MaxShardBytes = 2 << 30 }, false},
		{"val 1", func(c *BuildConfig) { c.ValFraction = 1 }, false},
		{"val negative", func(c *BuildConfig) { c.ValFraction = -0.1 }, false},
		{"val NaN", func(c *BuildConfig) { c.ValFraction = math.NaN() }, false},
		{"val 0", func(c *BuildConfig) { c.ValFraction = 0 }, true},
		{"bilinear", func(c *BuildConfig) { c.Interpolation = InterpBilinear }, true},
		{"lanczos", func(c *BuildConfig) { c.Interpolation = "lanczos" }, false},
		{"min side 0", func(c *BuildConfig) { c.MinSide = 0 }, false},
		{"workers -1", func(c *BuildConfig) { c.Workers = -1 }, false},
		{"pad", func(c *BuildConfig) { c.Resize = ResizePad }, true},
		{"crop", func(c *BuildConfig) { c.Resize = ResizeCrop }, true},
		{"resize unset", func(c *BuildConfig) { c.Resize = "" }, true},
		{"resize squash", func(c *BuildConfig) { c.Resize = "squash" }, false},
		{"label sep pipe", func(c *BuildConfig) { c.LabelSep = "|" }, true},
		{"label sep colon", func(c *BuildConfig) { c.LabelSep = ":" }, false},
	}
	for _, tt := range tests {
		c := DefaultBuildConfig()
		tt.mod(&c)
		if err := c.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// Shuffled shards mix the label folders; path order keeps each folder's
// images together (what a cluster's contiguous units must not see).
func TestBuildShuffle(t *testing.T) {
	src := t.TempDir()
	dirs := []string{"red_dress", "blue_jeans", "black_shirt"}
	for i := range 60 {
		writeFile(t, src, fmt.Sprintf("train/%s/img%02d.png", dirs[i/20], i), encodePNG(t, solid(8, 8, red)))
	}
	order := func(shuffle bool, seed uint64) (runs int, sources []string) {
		cfg := testConfig(t)
		cfg.Shuffle, cfg.Seed = shuffle, seed
		st := newStore(t)
		m := build(t, cfg, src, st)
		recs, err := ReadSplit(context.Background(), st, m, "train")
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range recs {
			sources = append(sources, r.Source)
			if i == 0 || path.Dir(r.Source) != path.Dir(recs[i-1].Source) {
				runs++
			}
		}
		want := map[bool]string{true: "shuffled", false: "path"}[shuffle]
		if m.Build.Order != want {
			t.Errorf("manifest order %q, want %q", m.Build.Order, want)
		}
		return runs, sources
	}
	if runs, _ := order(false, 1); runs != 3 {
		t.Errorf("path order: %d runs of one folder, want 3", runs)
	}
	runs, a := order(true, 1)
	if runs < 20 {
		t.Errorf("shuffled: only %d runs of one folder in 60 records", runs)
	}
	if _, b := order(true, 1); !slices.Equal(a, b) {
		t.Error("the same seed gave another order")
	}
	if _, c := order(true, 2); slices.Equal(a, c) {
		t.Error("another seed gave the same order")
	}
}
