package shard

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tailorml/tailor/store"
)

// Manifest constants.
const (
	// ManifestName is the manifest's object name at the dataset root.
	ManifestName = "manifest.json"
	// ManifestFormat is the manifest's "format" value.
	ManifestFormat = "tailor-shards"
	// ManifestVersion is the manifest version this package writes and reads.
	ManifestVersion = 1
	// MaxLabelLen bounds a label's length in bytes.
	MaxLabelLen = 255

	maxManifestBytes = 64 << 20
	maxRecords       = 1 << 40
)

// Split names, in ID order.
const (
	SplitTrain = "train"
	SplitVal   = "val"
	SplitTest  = "test"
)

var splitOrder = []string{SplitTrain, SplitVal, SplitTest}

// Manifest describes a dataset: its label vocabulary, image geometry,
// normalisation statistics and, per split, the shards that hold it.
type Manifest struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Labels is the vocabulary, sorted byte-wise; Record.Labels index it.
	Labels   []string `json:"labels"`
	Width    int      `json:"width"`
	Height   int      `json:"height"`
	Channels int      `json:"channels"`
	// Mean and Std are per channel (R, G, B) over every pixel of the train
	// split, with values scaled to [0,1]; Std is the population deviation.
	Mean []float64 `json:"mean"`
	Std  []float64 `json:"std"`
	// Build records how the images were prepared.
	Build BuildInfo `json:"build"`
	// Splits are in ID order: train, then val and test when present.
	Splits []Split `json:"splits"`
	// Skipped counts inputs that belong to no split, by reason.
	Skipped map[string]int64 `json:"skipped"`
}

// BuildInfo records the preparation choices, for people and for checks.
type BuildInfo struct {
	// Resize is how images reach Width x Height: "stretch" (aspect ratio
	// not kept), "pad" (aspect kept, centred on Alpha's colour) or "crop"
	// (the centred square). Empty, in manifests written before pad and
	// crop existed, means "stretch".
	Resize string `json:"resize"`
	// Interpolation is the resampling kernel: "catmullrom" or "bilinear".
	Interpolation string `json:"interpolation"`
	// Alpha is what transparent pixels are composited over and pad bands
	// are filled with: "white".
	Alpha string `json:"alpha"`
	// SplitBy is "directories" (train/val/test folders) or "path-hash".
	SplitBy string `json:"split_by"`
	// ValFraction is the share sent to val when SplitBy is "path-hash".
	ValFraction float64 `json:"val_fraction"`
	// MinSide is the smallest source width or height accepted.
	MinSide int `json:"min_side"`
	// Order is the order of each split's records: "shuffled" (by
	// ShuffleSeed) or "path".
	Order       string `json:"order,omitempty"`
	ShuffleSeed uint64 `json:"shuffle_seed,omitempty"`
}

// Split describes one split of the dataset.
type Split struct {
	Name string `json:"name"`
	// Records is the number of records; their IDs are FirstID..FirstID+Records-1.
	Records int64  `json:"records"`
	FirstID uint64 `json:"first_id"`
	// Input is "folders" or "csv".
	Input string `json:"input"`
	// LabelCounts[i] is the number of records carrying Labels[i].
	LabelCounts []int64 `json:"label_counts"`
	// Unlabeled is the number of records with an empty label set.
	Unlabeled int64 `json:"unlabeled"`
	// Bytes is the total size of the split's shards.
	Bytes int64 `json:"bytes"`
	// Skipped counts inputs left out, by reason (see the Skip* constants).
	Skipped map[string]int64 `json:"skipped"`
	// Shards hold the records in ID order.
	Shards []ShardInfo `json:"shards"`
}

// ShardInfo describes one shard file.
type ShardInfo struct {
	// Name is the object name in the dataset's store, e.g. "shards/train-00000.shard".
	Name string `json:"name"`
	// Records in the shard have IDs FirstID..FirstID+Records-1.
	Records int64  `json:"records"`
	FirstID uint64 `json:"first_id"`
	// Bytes is the file size.
	Bytes int64 `json:"bytes"`
	// SHA256 is the lower-case hex SHA-256 of the whole file.
	SHA256 string `json:"sha256"`
}

// PixelBytes is the size of one record's pixels.
func (m *Manifest) PixelBytes() int { return m.Width * m.Height * m.Channels }

// Records is the number of records over all splits.
func (m *Manifest) Records() int64 {
	var n int64
	for i := range m.Splits {
		n += m.Splits[i].Records
	}
	return n
}

// Split returns the named split, or an error matching ErrUnknownSplit.
func (m *Manifest) Split(name string) (*Split, error) {
	names := make([]string, 0, len(m.Splits))
	for i := range m.Splits {
		if m.Splits[i].Name == name {
			return &m.Splits[i], nil
		}
		names = append(names, m.Splits[i].Name)
	}
	return nil, fmt.Errorf("split %q (manifest has %s): %w", name, strings.Join(names, ", "), ErrUnknownSplit)
}

// LabelIndex returns the index of label in the vocabulary.
func (m *Manifest) LabelIndex(label string) (int, bool) {
	lo, hi := 0, len(m.Labels)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if m.Labels[mid] < label {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo < len(m.Labels) && m.Labels[lo] == label
}

// ValidLabel reports whether s may be a label: 1..MaxLabelLen bytes of UTF-8
// with no whitespace, control or format characters, '/' or '\'.
func ValidLabel(s string) error {
	if s == "" {
		return errors.New("empty label")
	}
	if len(s) > MaxLabelLen {
		return fmt.Errorf("label of %d bytes, limit %d", len(s), MaxLabelLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("label %q is not UTF-8", s)
	}
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			return fmt.Errorf("label %q contains whitespace", s)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			return fmt.Errorf("label %q contains control character %U", s, r)
		case r == '/' || r == '\\':
			return fmt.Errorf("label %q contains %q", s, r)
		}
	}
	return nil
}

// Validate checks the manifest's internal consistency: format and version,
// geometry, vocabulary order, statistics, and that every split's shards cover
// its ID range exactly once.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return corruptf(ErrCorrupt, "manifest: "+format, args...)
	}
	if m.Format != ManifestFormat {
		return bad("format %q, want %q", m.Format, ManifestFormat)
	}
	if m.Version != ManifestVersion {
		return corruptf(ErrUnsupportedVersion, "manifest: version %d, this reader knows %d", m.Version, ManifestVersion)
	}
	if m.Channels != Channels {
		return bad("%d channels, want %d", m.Channels, Channels)
	}
	if m.Width < 1 || m.Width > MaxSide || m.Height < 1 || m.Height > MaxSide {
		return bad("geometry %dx%d outside 1..%d", m.Width, m.Height, MaxSide)
	}
	if m.Build.Resize != "" {
		if err := checkResize(m.Build.Resize); err != nil {
			return bad("build: %v", err)
		}
	}
	if len(m.Labels) > MaxLabels {
		return bad("%d labels, limit %d", len(m.Labels), MaxLabels)
	}
	for i, l := range m.Labels {
		if err := ValidLabel(l); err != nil {
			return bad("label %d: %v", i, err)
		}
		if i > 0 && m.Labels[i-1] >= l {
			return bad("labels not sorted and distinct at %d: %q then %q", i, m.Labels[i-1], l)
		}
	}
	if len(m.Mean) != m.Channels || len(m.Std) != m.Channels {
		return bad("mean and std need %d values, have %d and %d", m.Channels, len(m.Mean), len(m.Std))
	}
	for c := range m.Channels {
		if !(m.Mean[c] >= 0 && m.Mean[c] <= 1) || !(m.Std[c] >= 0 && m.Std[c] <= 1) {
			return bad("channel %d: mean %v, std %v outside [0,1]", c, m.Mean[c], m.Std[c])
		}
	}
	if err := validSkipped(m.Skipped); err != nil {
		return bad("%v", err)
	}
	if len(m.Splits) == 0 || m.Splits[0].Name != SplitTrain {
		return bad("the first split must be %q", SplitTrain)
	}
	if m.Splits[0].Records == 0 {
		return bad("train split is empty")
	}
	seenSplit := map[string]bool{}
	seenShard := map[string]bool{}
	next := uint64(0)
	maxRec := uint64(recordSize(MaxLabels, MaxSourceLen, m.PixelBytes()))
	minRec := uint64(recordSize(0, 0, m.PixelBytes()))
	for i := range m.Splits {
		s := &m.Splits[i]
		if !isSplitName(s.Name) || seenSplit[s.Name] {
			return bad("split %d: name %q not one of %v or repeated", i, s.Name, splitOrder)
		}
		seenSplit[s.Name] = true
		if s.Records < 0 || s.Records > maxRecords {
			return bad("split %s: %d records", s.Name, s.Records)
		}
		if s.FirstID != next {
			return bad("split %s: first id %d, want %d (ids are contiguous over splits)", s.Name, s.FirstID, next)
		}
		if len(s.LabelCounts) != len(m.Labels) {
			return bad("split %s: %d label counts for %d labels", s.Name, len(s.LabelCounts), len(m.Labels))
		}
		for j, c := range s.LabelCounts {
			if c < 0 || c > s.Records {
				return bad("split %s: label %q count %d outside 0..%d", s.Name, m.Labels[j], c, s.Records)
			}
		}
		if s.Unlabeled < 0 || s.Unlabeled > s.Records {
			return bad("split %s: unlabeled %d outside 0..%d", s.Name, s.Unlabeled, s.Records)
		}
		if err := validSkipped(s.Skipped); err != nil {
			return bad("split %s: %v", s.Name, err)
		}
		id := s.FirstID
		var bytes int64
		for k := range s.Shards {
			sh := &s.Shards[k]
			if err := store.ValidName(sh.Name); err != nil || sh.Name == ManifestName || seenShard[sh.Name] {
				return bad("split %s shard %d: name %q invalid or repeated", s.Name, k, sh.Name)
			}
			seenShard[sh.Name] = true
			if sh.Records < 1 || sh.Records > math.MaxUint32 {
				return bad("shard %s: %d records", sh.Name, sh.Records)
			}
			if sh.FirstID != id {
				return bad("shard %s: first id %d, want %d", sh.Name, sh.FirstID, id)
			}
			id += uint64(sh.Records)
			if id-s.FirstID > uint64(s.Records) {
				return bad("split %s: shards hold more than its %d records", s.Name, s.Records)
			}
			n := uint64(sh.Records)
			if sh.Bytes < headerSize || uint64(sh.Bytes) < headerSize+n*minRec || uint64(sh.Bytes) > headerSize+n*maxRec {
				return bad("shard %s: %d bytes impossible for %d records", sh.Name, sh.Bytes, sh.Records)
			}
			bytes += sh.Bytes
			if b, err := hex.DecodeString(sh.SHA256); err != nil || len(b) != 32 || strings.ToLower(sh.SHA256) != sh.SHA256 {
				return bad("shard %s: sha256 %q is not 64 lower-case hex digits", sh.Name, sh.SHA256)
			}
		}
		if id-s.FirstID != uint64(s.Records) {
			return bad("split %s: shards hold %d records, split says %d", s.Name, id-s.FirstID, s.Records)
		}
		if bytes != s.Bytes {
			return bad("split %s: shards hold %d bytes, split says %d", s.Name, bytes, s.Bytes)
		}
		next = id
	}
	return nil
}

func isSplitName(s string) bool {
	for _, n := range splitOrder {
		if s == n {
			return true
		}
	}
	return false
}

func validSkipped(m map[string]int64) error {
	for k, v := range m {
		if k == "" || v < 0 {
			return fmt.Errorf("skipped %q: %d", k, v)
		}
	}
	return nil
}

// Marshal encodes the manifest as indented JSON. Equal manifests give equal bytes.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// DecodeManifest parses and validates a manifest.
func DecodeManifest(data []byte) (*Manifest, error) {
	if len(data) > maxManifestBytes {
		return nil, corruptf(ErrCorrupt, "manifest: %d bytes, limit %d", len(data), maxManifestBytes)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, corruptf(ErrCorrupt, "manifest: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return nil, corruptf(ErrCorrupt, "manifest: data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// LoadManifest reads and validates the manifest at the store's root.
func LoadManifest(ctx context.Context, st store.Store) (*Manifest, error) {
	rc, err := st.Get(ctx, ManifestName)
	if err != nil {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	m, err := DecodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	return m, nil
}

// DecodeOptions returns how to prepare a new image as this dataset's images
// were prepared, for DecodeImageOpts.
func (m *Manifest) DecodeOptions() DecodeOptions {
	return DecodeOptions{Size: m.Width, Interpolation: m.Build.Interpolation, Resize: m.Build.Resize}
}

// Normalization returns the per-channel mean and std as the net's input
// normalisation wants them (float32); a constant channel (std 0) gets std 1,
// so it is only centred.
func (m *Manifest) Normalization() (mean, std []float32) {
	mean, std = make([]float32, len(m.Mean)), make([]float32, len(m.Std))
	for i := range m.Mean {
		mean[i] = float32(m.Mean[i])
	}
	for i := range m.Std {
		if std[i] = float32(m.Std[i]); !(std[i] > 0) {
			std[i] = 1
		}
	}
	return mean, std
}
