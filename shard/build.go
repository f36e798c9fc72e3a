package shard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/tailorml/tailor/internal/progress"
	"github.com/tailorml/tailor/store"
)

// ShardDir is the store folder that holds shard files.
const ShardDir = "shards"

// BuildConfig controls Build. Start from DefaultBuildConfig.
type BuildConfig struct {
	// Size is the output width and height in pixels.
	Size int
	// MaxShardBytes bounds each shard file's size.
	MaxShardBytes int64
	// ValFraction is the share of a SRC without split folders that goes to
	// val, chosen by a hash of each path. 0 makes a train split only.
	ValFraction float64
	// Interpolation is the resampling kernel: InterpCatmullRom or InterpBilinear.
	Interpolation string
	// Resize is how an image that is not square reaches the square:
	// ResizeStretch (the default; "" means it too), ResizePad or ResizeCrop.
	Resize string
	// LabelSep separates the labels of a labels.csv field: LabelSepAuto
	// ("", detected per file), LabelSepSpace, ";", "," or "|".
	LabelSep string
	// AllowOddLabels builds a vocabulary that looks like a wrong label
	// separator (labels holding a separator character, or mostly labels
	// of one image) instead of refusing it.
	AllowOddLabels bool
	// MinSide skips images whose source width or height is smaller.
	MinSide int
	// MaxSourcePixels skips images whose width*height is larger (decompression bombs).
	MaxSourcePixels int64
	// MaxFileBytes skips larger files.
	MaxFileBytes int64
	// Workers decode and resize in parallel; 0 means GOMAXPROCS.
	Workers int
	// Strict turns every skip (hidden files aside) into an error.
	Strict bool
	// Overwrite allows a destination that already holds objects: its manifest
	// is deleted first and shards not in the new manifest are deleted last.
	Overwrite bool
	// Shuffle writes each split's records in an order drawn from Seed
	// rather than in path order. Folder trees group images by label, so
	// unshuffled shards hold runs of one label set, and a worker reading a
	// contiguous range of a shard trains on batches of near-identical
	// labels (the cluster's units are such ranges). Same input and config
	// still give byte-identical output.
	Shuffle bool
	Seed    uint64
}

// DefaultBuildConfig returns the defaults: 64x64, 64 MiB shards, 20% val.
func DefaultBuildConfig() BuildConfig {
	return BuildConfig{
		Size:            64,
		MaxShardBytes:   64 << 20,
		ValFraction:     0.2,
		Interpolation:   InterpCatmullRom,
		Resize:          ResizeStretch,
		MinSide:         8,
		MaxSourcePixels: 50_000_000,
		MaxFileBytes:    256 << 20,
		Shuffle:         true,
		Seed:            1,
	}
}

// Validate checks the configuration.
func (c *BuildConfig) Validate() error {
	const maxSize = 1024
	if c.Size < 1 || c.Size > maxSize {
		return fmt.Errorf("size %d: want 1..%d", c.Size, maxSize)
	}
	if min := int64(headerSize + recordSize(0, 0, c.Size*c.Size*Channels)); c.MaxShardBytes < min || c.MaxShardBytes > 1<<30 {
		return fmt.Errorf("max shard bytes %d: want %d..%d for %dx%d images", c.MaxShardBytes, min, 1<<30, c.Size, c.Size)
	}
	if !(c.ValFraction >= 0 && c.ValFraction < 1) {
		return fmt.Errorf("val fraction %v: want 0 <= f < 1", c.ValFraction)
	}
	if _, err := interpolator(c.Interpolation); err != nil {
		return err
	}
	if c.Resize != "" { // "" is ResizeStretch
		if err := checkResize(c.Resize); err != nil {
			return err
		}
	}
	if err := checkLabelSep(c.LabelSep); err != nil {
		return err
	}
	if c.MinSide < 1 {
		return fmt.Errorf("min side %d: want >= 1", c.MinSide)
	}
	if c.MaxSourcePixels < 1 {
		return fmt.Errorf("max source pixels %d: want >= 1", c.MaxSourcePixels)
	}
	if c.MaxFileBytes < 1 {
		return fmt.Errorf("max file bytes %d: want >= 1", c.MaxFileBytes)
	}
	if c.Workers < 0 {
		return fmt.Errorf("workers %d: want >= 0", c.Workers)
	}
	return nil
}

// Build ingests the images under src into shards and a manifest in dst and
// returns the manifest. src is a folder (with train/, val/, test/ split
// folders, or one pool split by path hash; each a tree of label folders or a
// labels.csv) or a CSV file. Images are decoded in parallel but written in
// sorted path order, so the same input and config give byte-identical output.
// Progress bars go to progress when it is not nil. The manifest is written
// last: a failed build leaves no manifest.
func Build(ctx context.Context, cfg BuildConfig, src string, dst store.Store, progress io.Writer, log *slog.Logger) (*Manifest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if cfg.Resize == "" {
		cfg.Resize = ResizeStretch
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	old, err := dst.List(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if len(old) > 0 && !cfg.Overwrite {
		return nil, fmt.Errorf("build: destination holds %d objects (e.g. %s): %w", len(old), old[0], ErrDestinationNotEmpty)
	}
	if err := checkNotInside(src, dst); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}

	splits, topSkipped, splitBy, err := scan(ctx, &cfg, src, log)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if !cfg.AllowOddLabels {
		if err := checkSingletons(splits); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
	}
	vocab, err := vocabulary(splits)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if len(old) > 0 {
		// From here on the old dataset is being replaced: unpublish it first.
		if err := dst.Delete(ctx, ManifestName); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
	}
	interp, _ := interpolator(cfg.Interpolation)
	b := &builder{
		cfg:   &cfg,
		dst:   dst,
		log:   log,
		vocab: vocab,
		index: make(map[string]uint16, len(vocab)),
		lim:   imageLimits{size: cfg.Size, minSide: cfg.MinSide, maxPixels: cfg.MaxSourcePixels, interp: interp, resize: cfg.Resize},
	}
	for i, l := range vocab {
		b.index[l] = uint16(i)
	}
	m := &Manifest{
		Format:   ManifestFormat,
		Version:  ManifestVersion,
		Labels:   vocab,
		Width:    cfg.Size,
		Height:   cfg.Size,
		Channels: Channels,
		Build: BuildInfo{
			Resize:        cfg.Resize,
			Interpolation: cfg.Interpolation,
			Alpha:         BackgroundName,
			SplitBy:       splitBy,
			MinSide:       cfg.MinSide,
			Order:         "path",
		},
		Skipped: topSkipped,
	}
	if splitBy == "path-hash" {
		m.Build.ValFraction = cfg.ValFraction
	}
	if cfg.Shuffle {
		m.Build.Order, m.Build.ShuffleSeed = "shuffled", cfg.Seed
	}
	var next uint64
	for _, in := range splits {
		s, err := b.buildSplit(ctx, in, next, progress)
		if err != nil {
			return nil, fmt.Errorf("build: split %s: %w", in.name, err)
		}
		next += uint64(s.Records)
		m.Splits = append(m.Splits, *s)
	}
	if m.Splits[0].Records == 0 {
		return nil, fmt.Errorf("build: no usable images for the train split in %s", src)
	}
	m.Mean, m.Std = b.stats.meanStd()
	warnLabels(log, m)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("build: the new manifest is invalid (a bug): %w", err)
	}
	data, err := m.Marshal()
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if err := dst.Put(ctx, ManifestName, bytes.NewReader(data), int64(len(data))); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if cfg.Overwrite {
		if err := deleteStale(ctx, dst, m); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
	}
	return m, nil
}

// checkNotInside refuses a local destination inside the source tree, whose
// shards the scan would meet.
func checkNotInside(src string, dst store.Store) error {
	ls, ok := dst.(*store.Local)
	if !ok {
		return nil
	}
	absSrc, err := filepath.Abs(src)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(absSrc); err == nil && !fi.IsDir() {
		absSrc = filepath.Dir(absSrc)
	}
	rel, err := filepath.Rel(absSrc, ls.Root())
	if err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("destination %s is inside the source %s", ls.Root(), absSrc)
	}
	return nil
}

// vocabulary is the sorted union of all inputs' labels.
func vocabulary(splits []*splitInputs) ([]string, error) {
	set := map[string]bool{}
	for _, s := range splits {
		for _, in := range s.inputs {
			for _, l := range in.labels {
				set[l] = true
			}
		}
	}
	if len(set) > MaxLabels {
		return nil, fmt.Errorf("%d distinct labels, limit %d", len(set), MaxLabels)
	}
	vocab := make([]string, 0, len(set))
	for l := range set {
		vocab = append(vocab, l)
	}
	slices.Sort(vocab) // byte-wise, like sorted() in Python
	return vocab, nil
}

// warnLabels logs labels that look like mistakes.
func warnLabels(log *slog.Logger, m *Manifest) {
	train := m.Splits[0]
	var none []string
	for i, c := range train.LabelCounts {
		if c == 0 {
			none = append(none, m.Labels[i])
		}
	}
	if len(none) > 0 {
		log.Warn("labels with no train example", "labels", none)
	}
	folded := map[string]string{}
	for _, l := range m.Labels {
		k := strings.ToLower(l)
		if prev, ok := folded[k]; ok {
			log.Warn("labels differ only in case", "a", prev, "b", l)
		}
		folded[k] = l
	}
}

// deleteStale removes shards an earlier build left that the new manifest does not list.
func deleteStale(ctx context.Context, dst store.Store, m *Manifest) error {
	keep := map[string]bool{}
	for _, s := range m.Splits {
		for _, sh := range s.Shards {
			keep[sh.Name] = true
		}
	}
	names, err := dst.List(ctx, ShardDir+"/")
	if err != nil {
		return err
	}
	for _, n := range names {
		if !keep[n] {
			if err := dst.Delete(ctx, n); err != nil {
				return err
			}
		}
	}
	return nil
}

type builder struct {
	cfg   *BuildConfig
	dst   store.Store
	log   *slog.Logger
	vocab []string
	index map[string]uint16
	lim   imageLimits
	stats pixelStats
}

// result is one decoded input.
type result struct {
	pix    []byte
	reason string // non-empty: skipped
	err    error
}

// buildSplit decodes a split's inputs in parallel and writes them in order.
func (b *builder) buildSplit(ctx context.Context, in *splitInputs, firstID uint64, progressOut io.Writer) (*Split, error) {
	s := &Split{
		Name:        in.name,
		FirstID:     firstID,
		Input:       in.kind,
		LabelCounts: make([]int64, len(b.vocab)),
		Skipped:     in.skipped,
		Shards:      []ShardInfo{},
	}
	if s.Input == "" {
		s.Input = "folders"
	}
	var bar *progress.Bar
	if progressOut != nil {
		bar = progress.New(progressOut, int64(len(in.inputs)), in.name)
		defer bar.Finish()
	}
	w := &shardWriter{
		dst:     b.dst,
		split:   in.name,
		h:       Header{Width: b.cfg.Size, Height: b.cfg.Size, Channels: Channels},
		max:     b.cfg.MaxShardBytes,
		firstID: firstID,
	}

	pctx, cancel := context.WithCancel(ctx) // stops the feeder and workers
	defer cancel()
	// The feeder hands out inputs and queues one future per input, in order;
	// at most window inputs are in flight, which bounds memory.
	window := 4 * b.cfg.Workers
	type job struct {
		in  *input
		out chan<- result
	}
	jobs := make(chan job)
	futures := make(chan chan result, window)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(jobs)
		defer close(futures)
		for i := range in.inputs {
			ch := make(chan result, 1)
			select {
			case futures <- ch:
			case <-pctx.Done():
				return
			}
			select {
			case jobs <- job{&in.inputs[i], ch}:
			case <-pctx.Done():
				return
			}
		}
	})
	for range b.cfg.Workers {
		wg.Go(func() {
			for j := range jobs {
				j.out <- b.decode(j.in)
			}
		})
	}
	err := func() error {
		i := 0
		for ch := range futures {
			var r result
			select {
			case r = <-ch:
			case <-pctx.Done():
				return pctx.Err()
			}
			cur := &in.inputs[i]
			i++
			bar.Add(1)
			if r.reason != "" {
				if err := b.skip(s, cur.rel, r.reason, r.err); err != nil {
					return err
				}
				continue
			}
			rec := Record{ID: firstID + uint64(s.Records), Pixels: r.pix, Source: cur.rel}
			if len(cur.labels) > 0 {
				rec.Labels = make([]uint16, len(cur.labels))
			}
			for k, l := range cur.labels {
				rec.Labels[k] = b.index[l]
				s.LabelCounts[rec.Labels[k]]++
			}
			if len(rec.Labels) == 0 {
				s.Unlabeled++
			}
			if err := w.add(ctx, &rec); err != nil {
				return err
			}
			if in.name == SplitTrain {
				b.stats.add(r.pix)
			}
			s.Records++
		}
		return pctx.Err()
	}()
	cancel()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if err := w.flush(ctx); err != nil {
		return nil, err
	}
	s.Shards = append(s.Shards, w.shards...)
	for _, sh := range s.Shards {
		s.Bytes += sh.Bytes
	}
	return s, nil
}

// decode reads and decodes one input.
func (b *builder) decode(in *input) result {
	f, err := os.Open(in.abs)
	if err != nil {
		return result{reason: SkipUnreadable, err: err}
	}
	defer f.Close()
	// The scan checked the size; a file that grew since is cut off and fails to decode.
	data, err := io.ReadAll(io.LimitReader(f, b.cfg.MaxFileBytes+1))
	if err != nil {
		return result{reason: SkipUnreadable, err: err}
	}
	if int64(len(data)) > b.cfg.MaxFileBytes {
		return result{reason: SkipTooLarge, err: fmt.Errorf("file grew past %d bytes", b.cfg.MaxFileBytes)}
	}
	pix, reason, err := decodeImage(data, b.lim)
	return result{pix: pix, reason: reason, err: err}
}

// skip counts an input that failed to decode; with Strict it is an error.
func (b *builder) skip(s *Split, rel, reason string, detail error) error {
	s.Skipped[reason]++
	b.log.Warn("skipped input", "split", s.Name, "path", rel, "reason", reason, "err", detail)
	if b.cfg.Strict {
		return fmt.Errorf("%s: %s (strict): %v: %w", rel, reason, detail, ErrBadInput)
	}
	return nil
}

// shardWriter packs records into shard files of at most max bytes.
type shardWriter struct {
	dst     store.Store
	split   string
	h       Header
	max     int64
	firstID uint64 // ID of the first record of the shard being filled
	buf     []byte // encoded records of the shard being filled
	shards  []ShardInfo
}

func (w *shardWriter) add(ctx context.Context, rec *Record) error {
	size := int64(recordSize(len(rec.Labels), len(rec.Source), len(rec.Pixels)))
	if headerSize+size > w.max {
		return fmt.Errorf("record %s needs %d bytes, more than max shard bytes %d", rec.Source, headerSize+size, w.max)
	}
	if headerSize+int64(len(w.buf))+size > w.max || w.h.Records == math.MaxUint32 {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	w.buf = appendRecord(w.buf, rec)
	w.h.Records++
	return nil
}

// flush writes the shard being filled, if it holds any record.
func (w *shardWriter) flush(ctx context.Context) error {
	if w.h.Records == 0 {
		return nil
	}
	w.h.FirstID = w.firstID
	hdr := appendHeader(nil, w.h)
	sum := sha256.New()
	sum.Write(hdr)
	sum.Write(w.buf)
	info := ShardInfo{
		Name:    fmt.Sprintf("%s/%s-%05d.shard", ShardDir, w.split, len(w.shards)),
		Records: int64(w.h.Records),
		FirstID: w.firstID,
		Bytes:   int64(len(hdr) + len(w.buf)),
		SHA256:  hex.EncodeToString(sum.Sum(nil)),
	}
	if err := w.dst.Put(ctx, info.Name, io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(w.buf)), info.Bytes); err != nil {
		return err
	}
	if n, err := w.dst.Stat(ctx, info.Name); err != nil {
		return err
	} else if n != info.Bytes {
		return fmt.Errorf("stored %s has %d bytes, wrote %d", info.Name, n, info.Bytes)
	}
	w.shards = append(w.shards, info)
	w.firstID += uint64(w.h.Records)
	w.h.Records = 0
	w.buf = w.buf[:0]
	return nil
}

// pixelStats sums pixel values per channel exactly, in integers.
type pixelStats struct {
	n          uint64 // pixels
	sum, sumSq [Channels]uint64
}

func (p *pixelStats) add(pix []byte) {
	for i := 0; i+Channels <= len(pix); i += Channels {
		for c := range Channels {
			v := uint64(pix[i+c])
			p.sum[c] += v
			p.sumSq[c] += v * v
		}
	}
	p.n += uint64(len(pix) / Channels)
}

// meanStd returns the per-channel mean and population standard deviation of
// the pixel values scaled to [0,1].
func (p *pixelStats) meanStd() (mean, std []float64) {
	mean, std = make([]float64, Channels), make([]float64, Channels)
	if p.n == 0 {
		return mean, std
	}
	n := float64(p.n)
	for c := range Channels {
		mu := float64(p.sum[c]) / n
		v := float64(p.sumSq[c])/n - mu*mu
		mean[c] = mu / 255
		std[c] = math.Sqrt(max(v, 0)) / 255
	}
	return mean, std
}
