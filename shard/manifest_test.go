package shard

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tailorml/tailor/store"
)

// validManifest returns a small manifest that passes Validate.
func validManifest() *Manifest {
	pix := 2 * 2 * 3
	return &Manifest{
		Format: ManifestFormat, Version: ManifestVersion,
		Labels: []string{"blue", "dress"},
		Width:  2, Height: 2, Channels: 3,
		Mean: []float64{0.5, 0.5, 0.5}, Std: []float64{0.25, 0.25, 0.25},
		Build: BuildInfo{Resize: "stretch", Interpolation: InterpCatmullRom, Alpha: "white", SplitBy: "directories", MinSide: 1},
		Splits: []Split{
			{Name: SplitTrain, Records: 3, FirstID: 0, Input: "folders", LabelCounts: []int64{2, 3}, Skipped: map[string]int64{SkipHidden: 1},
				Bytes: 2*headerSize + 3*int64(recordSize(1, 10, pix)),
				Shards: []ShardInfo{
					{Name: "shards/train-00000.shard", Records: 2, FirstID: 0, Bytes: headerSize + 2*int64(recordSize(1, 10, pix)), SHA256: strings.Repeat("ab", 32)},
					{Name: "shards/train-00001.shard", Records: 1, FirstID: 2, Bytes: headerSize + int64(recordSize(1, 10, pix)), SHA256: strings.Repeat("cd", 32)},
				}},
			{Name: SplitVal, Records: 0, FirstID: 3, Input: "folders", LabelCounts: []int64{0, 0}, Shards: []ShardInfo{}},
		},
		Skipped: map[string]int64{},
	}
}

func TestManifestValidate(t *testing.T) {
	if err := validManifest().Validate(); err != nil {
		t.Fatalf("valid manifest: %v", err)
	}
	tests := []struct {
		name string
		mod  func(m *Manifest)
		want error
	}{
		{"format", func(m *Manifest) { m.Format = "other" }, ErrCorrupt},
		{"version", func(m *Manifest) { m.Version = 2 }, ErrUnsupportedVersion},
		{"channels", func(m *Manifest) { m.Channels = 1 }, ErrCorrupt},
		{"width 0", func(m *Manifest) { m.Width = 0 }, ErrCorrupt},
		{"labels unsorted", func(m *Manifest) { m.Labels = []string{"dress", "blue"} }, ErrCorrupt},
		{"labels repeated", func(m *Manifest) { m.Labels = []string{"blue", "blue"} }, ErrCorrupt},
		{"bad label", func(m *Manifest) { m.Labels = []string{"bl ue", "dress"} }, ErrCorrupt},
		{"mean short", func(m *Manifest) { m.Mean = m.Mean[:2] }, ErrCorrupt},
		{"std above 1", func(m *Manifest) { m.Std[1] = 2 }, ErrCorrupt},
		{"no splits", func(m *Manifest) { m.Splits = nil }, ErrCorrupt},
		{"val first", func(m *Manifest) { m.Splits[0], m.Splits[1] = m.Splits[1], m.Splits[0] }, ErrCorrupt},
		{"empty train", func(m *Manifest) { m.Splits[0].Records = 0 }, ErrCorrupt},
		{"unknown split", func(m *Manifest) { m.Splits[1].Name = "holdout" }, ErrCorrupt},
		{"repeated split", func(m *Manifest) { m.Splits[1].Name = SplitTrain }, ErrCorrupt},
		{"split id gap", func(m *Manifest) { m.Splits[1].FirstID = 4 }, ErrCorrupt},
		{"label counts short", func(m *Manifest) { m.Splits[0].LabelCounts = []int64{1} }, ErrCorrupt},
		{"label count too big", func(m *Manifest) { m.Splits[0].LabelCounts[0] = 4 }, ErrCorrupt},
		{"negative skip", func(m *Manifest) { m.Splits[0].Skipped[SkipHidden] = -1 }, ErrCorrupt},
		{"shard id gap", func(m *Manifest) { m.Splits[0].Shards[1].FirstID = 3 }, ErrCorrupt},
		{"shards hold too few", func(m *Manifest) { m.Splits[0].Records = 4 }, ErrCorrupt},
		{"shards hold too many", func(m *Manifest) { m.Splits[0].Records = 2 }, ErrCorrupt},
		{"empty shard", func(m *Manifest) { m.Splits[0].Shards[1].Records = 0 }, ErrCorrupt},
		{"shard name escapes", func(m *Manifest) { m.Splits[0].Shards[0].Name = "../x.shard" }, ErrCorrupt},
		{"shard name repeated", func(m *Manifest) { m.Splits[0].Shards[1].Name = m.Splits[0].Shards[0].Name }, ErrCorrupt},
		{"shard named manifest", func(m *Manifest) { m.Splits[0].Shards[0].Name = ManifestName }, ErrCorrupt},
		{"shard too small", func(m *Manifest) { m.Splits[0].Shards[0].Bytes = 10 }, ErrCorrupt},
		{"split bytes", func(m *Manifest) { m.Splits[0].Bytes++ }, ErrCorrupt},
		{"sha upper case", func(m *Manifest) { m.Splits[0].Shards[0].SHA256 = strings.Repeat("AB", 32) }, ErrCorrupt},
		{"sha short", func(m *Manifest) { m.Splits[0].Shards[0].SHA256 = "abcd" }, ErrCorrupt},
		{"unknown resize", func(m *Manifest) { m.Build.Resize = "squash" }, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validManifest()
			tt.mod(m)
			if err := m.Validate(); !errors.Is(err, tt.want) {
				t.Errorf("Validate() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestManifestRoundTrip(t *testing.T) {
	m := validManifest()
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"format": "tailor-shards"`, `"version": 1`, `"labels": [`, `"sha256": "abab`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("manifest JSON lacks %s:\n%s", want, data)
		}
	}
	got, err := DecodeManifest(data)
	if err != nil {
		t.Fatalf("DecodeManifest: %v", err)
	}
	again, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(data) {
		t.Errorf("re-encoded manifest differs:\n%s\nvs\n%s", again, data)
	}
	for _, bad := range []string{"", "{", "[]", `{"format":"tailor-shards"}`, string(data) + "{}", string(data) + "x"} {
		if _, err := DecodeManifest([]byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("DecodeManifest(%.30q) = %v, want ErrCorrupt", bad, err)
		}
	}
}

func TestLoadManifestMissing(t *testing.T) {
	if _, err := LoadManifest(context.Background(), newStore(t)); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("error = %v, want store.ErrNotExist", err)
	}
}

func TestManifestLookups(t *testing.T) {
	m := validManifest()
	if s, err := m.Split(SplitVal); err != nil || s.FirstID != 3 {
		t.Errorf("Split(val) = %+v, %v", s, err)
	}
	if _, err := m.Split(SplitTest); !errors.Is(err, ErrUnknownSplit) || !strings.Contains(err.Error(), "train, val") {
		t.Errorf("Split(test) error = %v", err)
	}
	for label, want := range map[string]int{"blue": 0, "dress": 1} {
		if i, ok := m.LabelIndex(label); !ok || i != want {
			t.Errorf("LabelIndex(%q) = %d, %v", label, i, ok)
		}
	}
	if _, ok := m.LabelIndex("cat"); ok {
		t.Error("LabelIndex(cat) found")
	}
	if m.Records() != 3 || m.PixelBytes() != 12 {
		t.Errorf("Records %d PixelBytes %d", m.Records(), m.PixelBytes())
	}
}

func TestLabelRules(t *testing.T) {
	tests := []struct {
		folder string
		want   []string // nil: error
	}{
		{"female_blue_dress", []string{"blue", "dress", "female"}},
		{"blue", []string{"blue"}},
		{"blue_blue", []string{"blue"}},
		{" blue _dress ", []string{"blue", "dress"}},
		{"Blue_blue", []string{"Blue", "blue"}},
		{"blå_kjole", []string{"blå", "kjole"}},
		{"t-shirt_v.2", []string{"t-shirt", "v.2"}},
		{"blue__dress", nil},
		{"_dress", nil},
		{"dress_", nil},
		{"_", nil},
		{"light blue_dress", nil},
		{"bl\x01ue", nil},
		{"bl\u200bue", nil}, // zero-width space
		{"bl\\ue", nil},
		{"\xff\xfe", nil},
		{strings.Repeat("x", MaxLabelLen+1), nil},
	}
	for _, tt := range tests {
		got, err := ParseFolderLabels(tt.folder)
		if tt.want == nil {
			if err == nil {
				t.Errorf("ParseFolderLabels(%q) = %q, want an error", tt.folder, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseFolderLabels(%q) = %q, %v; want %q", tt.folder, got, err, tt.want)
		}
	}
	csvTests := []struct {
		field string
		want  []string
	}{
		{"", []string{}},
		{"  ", []string{}},
		{"red dress", []string{"dress", "red"}},
		{"t_shirt\tred  red", []string{"red", "t_shirt"}},
		{"a/b", nil},
	}
	for _, tt := range csvTests {
		got, err := ParseCSVLabels(tt.field)
		if tt.want == nil {
			if err == nil {
				t.Errorf("ParseCSVLabels(%q) = %q, want an error", tt.field, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseCSVLabels(%q) = %q, %v; want %q", tt.field, got, err, tt.want)
		}
	}
}

// TestManifestResize: a manifest from before --resize (no resize field)
// still loads and means stretch; pad and crop load as recorded.
func TestManifestResize(t *testing.T) {
	for _, tt := range []struct{ resize, want string }{{"", ResizeStretch}, {ResizeStretch, ResizeStretch}, {ResizePad, ResizePad}, {ResizeCrop, ResizeCrop}} {
		m := validManifest()
		m.Build.Resize = tt.resize
		data, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if tt.resize == "" {
			data = bytes.Replace(data, []byte(`"resize": "",`), nil, 1)
			if bytes.Contains(data, []byte(`"resize"`)) {
				t.Fatalf("resize field not removed:\n%s", data)
			}
		}
		m2, err := DecodeManifest(data)
		if err != nil {
			t.Fatalf("resize %q: %v", tt.resize, err)
		}
		opts := m2.DecodeOptions()
		if opts.Size != m.Width || opts.Interpolation != m.Build.Interpolation || opts.Resize != tt.resize {
			t.Errorf("resize %q: DecodeOptions() = %+v", tt.resize, opts)
		}
		// DecodeImageOpts with the manifest's options prepares a wide
		// picture as Build would with that mode.
		pic := readPhoto(t, "wide.png")
		got, err := DecodeImageOpts(pic, DecodeOptions{Size: 8, Resize: opts.Resize})
		if err != nil {
			t.Fatal(err)
		}
		want, _, err := decodeImage(pic, imageLimits{size: 8, minSide: 1, maxPixels: 1 << 20, interp: mustInterp(t), resize: tt.want})
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("resize %q: DecodeImageOpts differs from a %s build (%v)", tt.resize, tt.want, err)
		}
	}
	if _, err := DecodeImageOpts(readPhoto(t, "wide.png"), DecodeOptions{Size: 8, Resize: "squash"}); err == nil {
		t.Error("DecodeImageOpts with resize squash succeeded")
	}
}

func TestDecodeOptionsFromMeta(t *testing.T) {
	tests := []struct {
		meta map[string]string
		want DecodeOptions
	}{
		{nil, DecodeOptions{Size: 8}}, // an old model: default kernel, stretch
		{map[string]string{MetaInterpolation: InterpBilinear}, DecodeOptions{Size: 8, Interpolation: InterpBilinear}},
		{map[string]string{MetaInterpolation: InterpCatmullRom, MetaResize: ResizeCrop, "epoch": "3"}, DecodeOptions{Size: 8, Interpolation: InterpCatmullRom, Resize: ResizeCrop}},
	}
	for _, tt := range tests {
		if got := DecodeOptionsFromMeta(8, tt.meta); got != tt.want {
			t.Errorf("DecodeOptionsFromMeta(8, %v) = %+v, want %+v", tt.meta, got, tt.want)
		}
	}
}
