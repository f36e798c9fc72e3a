package fashion

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrOutExists is returned when the output folder already holds a generated set
// and Config.Overwrite is false.
var ErrOutExists = errors.New("fashion: output folder already holds a data set")

// MetadataFile is the name of the file, in the output folder, that records how
// the set was generated.
const MetadataFile = "dataset.json"

// CSVLabelSeparator separates the labels in the labels column of labels.csv.
const CSVLabelSeparator = " "

// Summary reports what Generate wrote.
type Summary struct {
	Out     string
	Splits  []SplitSummary // train, val, test; splits with no images are left out
	Labels  []string       // every label that occurs, sorted
	Elapsed time.Duration
}

// SplitSummary counts one split.
type SplitSummary struct {
	Name      string
	Images    int
	Garments  int
	LabelSets int            // distinct label sets (folders)
	Labels    map[string]int // images carrying each label
}

// Generate writes the data set that cfg describes and returns a summary. It
// reads the Fashion-MNIST files from cfg.Source, composes every image from the
// seed and the image's position, and renders and encodes PNGs on cfg.Workers
// goroutines. The same config gives byte-identical files. dataset.json is
// written last: a folder without it holds an incomplete set.
func Generate(ctx context.Context, cfg Config, log *slog.Logger) (*Summary, error) {
	start := time.Now()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	colours := make([]Colour, len(cfg.Colours))
	for i, name := range cfg.Colours {
		colours[i], _ = paletteColour(name)
	}
	sets, err := loadSets(&cfg, log)
	if err != nil {
		return nil, err
	}
	jobs, err := plan(&cfg, colours, sets)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	if err := prepareOut(cfg.Out, cfg.Overwrite); err != nil {
		return nil, err
	}
	if err := makeDirs(cfg.Out, cfg.Format, jobs); err != nil {
		return nil, err
	}
	log.Info("generating fashion set", "out", cfg.Out, "train", cfg.Train, "val", cfg.Val, "test", cfg.Test,
		"size", cfg.Size, "layout", cfg.Layout, "format", cfg.Format, "seed", cfg.Seed)

	if err := writeImages(ctx, &cfg, sets, jobs); err != nil {
		return nil, err
	}
	if cfg.Format == FormatCSV {
		if err := writeCSVs(cfg.Out, jobs); err != nil {
			return nil, err
		}
	}
	sum := summarize(cfg.Out, jobs)
	if err := writeMetadata(&cfg, colours, sum); err != nil {
		return nil, err
	}
	sum.Elapsed = time.Since(start)
	log.Info("generated fashion set", "out", cfg.Out, "images", len(jobs), "elapsed", sum.Elapsed.Round(time.Millisecond))
	return sum, nil
}

// loadSets reads the Fashion-MNIST sets that cfg's counts need.
func loadSets(cfg *Config, log *slog.Logger) (map[string]*Set, error) {
	sets := map[string]*Set{}
	for _, need := range []struct {
		name string
		n    int
	}{{"train", cfg.Train + cfg.Val}, {"t10k", cfg.Test}} {
		if need.n == 0 {
			continue
		}
		s, err := LoadSet(cfg.Source, need.name)
		if err != nil {
			return nil, fmt.Errorf("load fashion-mnist: %w", err)
		}
		sets[need.name] = s
		log.Debug("loaded source", "set", s.Name, "images", s.Len(), "rows", s.Rows, "cols", s.Cols)
	}
	return sets, nil
}

// plan composes every image of the set, in split and id order.
func plan(cfg *Config, colours []Colour, sets map[string]*Set) ([]Composition, error) {
	nTrain, nTest := 0, 0
	if s := sets["train"]; s != nil {
		nTrain = s.Len()
	}
	if s := sets["t10k"]; s != nil {
		nTest = s.Len()
	}
	pl := makePools(nTrain, nTest)
	counts := map[string]int{SplitTrain: cfg.Train, SplitVal: cfg.Val, SplitTest: cfg.Test}
	var jobs []Composition
	for _, split := range splitNames {
		if counts[split] == 0 {
			continue
		}
		setName, pool := pl.pool(split)
		if len(pool) == 0 {
			return nil, fmt.Errorf("no source images for split %s in the %s set", split, setName)
		}
		for id := range counts[split] {
			jobs = append(jobs, compose(cfg, colours, sets[setName], pool, split, id))
		}
	}
	return jobs, nil
}

// prepareOut makes out, refusing (or, with overwrite, clearing) a previous set.
func prepareOut(out string, overwrite bool) error {
	ours := []string{SplitTrain, SplitVal, SplitTest, MetadataFile}
	var found []string
	for _, name := range ours {
		if _, err := os.Lstat(filepath.Join(out, name)); err == nil {
			found = append(found, name)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("check output folder: %w", err)
		}
	}
	if len(found) > 0 && !overwrite {
		return fmt.Errorf("%w: %s has %s", ErrOutExists, out, strings.Join(found, ", "))
	}
	for _, name := range found {
		if err := os.RemoveAll(filepath.Join(out, name)); err != nil {
			return fmt.Errorf("clear output folder: %w", err)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("make output folder: %w", err)
	}
	return nil
}

// imagePath is where the image goes, relative to the output folder.
func imagePath(format string, c *Composition) string {
	if format == FormatCSV {
		return filepath.Join(c.Split, "images", c.FileName())
	}
	return filepath.Join(c.Split, c.Dir(), c.FileName())
}

func makeDirs(out, format string, jobs []Composition) error {
	dirs := map[string]bool{}
	for i := range jobs {
		dirs[filepath.Dir(imagePath(format, &jobs[i]))] = true
	}
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return fmt.Errorf("make image folder: %w", err)
		}
	}
	return nil
}

// writeImages renders, encodes and writes every job on cfg.Workers goroutines.
// It stops at the first error or when ctx is done.
func writeImages(ctx context.Context, cfg *Config, sets map[string]*Set, jobs []Composition) error {
	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, max(len(jobs), 1))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			enc := png.Encoder{CompressionLevel: png.DefaultCompression}
			var buf bytes.Buffer
			for i := range next {
				c := &jobs[i]
				buf.Reset()
				if err := enc.Encode(&buf, render(c, sets[c.Set], nil)); err != nil {
					cancel(fmt.Errorf("encode %s/%s: %w", c.Split, c.FileName(), err))
					return
				}
				path := filepath.Join(cfg.Out, imagePath(cfg.Format, c))
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					cancel(fmt.Errorf("write image: %w", err))
					return
				}
			}
		})
	}
feed:
	for i := range jobs {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("generate images: %w", err)
	}
	return nil
}

// writeCSVs writes OUT/<split>/labels.csv for the csv format.
func writeCSVs(out string, jobs []Composition) error {
	bySplit := map[string][]*Composition{}
	for i := range jobs {
		bySplit[jobs[i].Split] = append(bySplit[jobs[i].Split], &jobs[i])
	}
	for split, cs := range bySplit {
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		_ = w.Write([]string{"path", "labels"})
		for _, c := range cs {
			_ = w.Write([]string{"images/" + c.FileName(), strings.Join(c.Labels(), CSVLabelSeparator)})
		}
		w.Flush()
		if err := w.Error(); err != nil {
			return fmt.Errorf("write %s labels.csv: %w", split, err)
		}
		if err := os.WriteFile(filepath.Join(out, split, "labels.csv"), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write labels.csv: %w", err)
		}
	}
	return nil
}

func summarize(out string, jobs []Composition) *Summary {
	s := &Summary{Out: out}
	all := map[string]bool{}
	for _, split := range splitNames {
		ss := SplitSummary{Name: split, Labels: map[string]int{}}
		dirs := map[string]bool{}
		for i := range jobs {
			c := &jobs[i]
			if c.Split != split {
				continue
			}
			ss.Images++
			ss.Garments += len(c.Garments)
			dirs[c.Dir()] = true
			for _, l := range c.Labels() {
				ss.Labels[l]++
				all[l] = true
			}
		}
		ss.LabelSets = len(dirs)
		if ss.Images > 0 {
			s.Splits = append(s.Splits, ss)
		}
	}
	for l := range all {
		s.Labels = append(s.Labels, l)
	}
	sort.Strings(s.Labels)
	return s
}

// Print writes the summary as text: images per split, then how many images of
// each split carry each label.
func (s *Summary) Print(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "wrote %s\n\n%-10s", s.Out, "split")
	for _, sp := range s.Splits {
		fmt.Fprintf(&b, " %8s", sp.Name)
	}
	row := func(name string, f func(SplitSummary) string) {
		fmt.Fprintf(&b, "\n%-10s", name)
		for _, sp := range s.Splits {
			fmt.Fprintf(&b, " %8s", f(sp))
		}
	}
	row("images", func(sp SplitSummary) string { return fmt.Sprint(sp.Images) })
	row("garments", func(sp SplitSummary) string { return fmt.Sprint(sp.Garments) })
	row("label sets", func(sp SplitSummary) string { return fmt.Sprint(sp.LabelSets) })
	b.WriteString("\n\nimages per label:")
	for _, l := range s.Labels {
		row(l, func(sp SplitSummary) string {
			return fmt.Sprintf("%.1f%%", 100*float64(sp.Labels[l])/float64(max(sp.Images, 1)))
		})
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// metadata is the content of dataset.json.
type metadata struct {
	Generator   string                    `json:"generator"`
	Source      string                    `json:"source"`
	SourceSplit map[string]string         `json:"source_split"`
	Seed        uint64                    `json:"seed"`
	Size        int                       `json:"size"`
	Layout      string                    `json:"layout"`
	Format      string                    `json:"format"`
	Garments    [2]int                    `json:"garments_per_image"`
	Counts      map[string]int            `json:"counts"`
	Colours     []metaColour              `json:"colours"`
	Classes     []string                  `json:"classes"`
	Labels      []string                  `json:"labels"`
	LabelCounts map[string]map[string]int `json:"label_counts"`
	Naming      string                    `json:"naming"`
	License     string                    `json:"license"`
}

type metaColour struct {
	Name string   `json:"name"`
	RGB  [3]uint8 `json:"rgb"`
}

func writeMetadata(cfg *Config, colours []Colour, sum *Summary) error {
	m := metadata{
		Generator: "tailor data fashion",
		Source:    cfg.Source,
		SourceSplit: map[string]string{
			SplitTrain: fmt.Sprintf("Fashion-MNIST train images with index %% %d != %d", valEvery, valEvery-1),
			SplitVal:   fmt.Sprintf("Fashion-MNIST train images with index %% %d == %d", valEvery, valEvery-1),
			SplitTest:  "Fashion-MNIST t10k images",
		},
		Seed:        cfg.Seed,
		Size:        cfg.Size,
		Layout:      cfg.Layout,
		Format:      cfg.Format,
		Garments:    [2]int{cfg.MinGarments, cfg.MaxGarments},
		Counts:      map[string]int{SplitTrain: cfg.Train, SplitVal: cfg.Val, SplitTest: cfg.Test},
		Classes:     ClassNames[:],
		Labels:      sum.Labels,
		LabelCounts: map[string]map[string]int{},
		License:     "images derived from Fashion-MNIST, Copyright (c) 2017 Zalando SE, MIT license",
	}
	if cfg.Layout == LayoutSingle {
		m.Garments = [2]int{1, 1}
	}
	for _, c := range colours {
		m.Colours = append(m.Colours, metaColour{c.Name, [3]uint8{c.R, c.G, c.B}})
	}
	for _, sp := range sum.Splits {
		m.LabelCounts[sp.Name] = sp.Labels
	}
	switch {
	case cfg.Format == FormatCSV:
		m.Naming = "<split>/images/<id>.png listed in <split>/labels.csv (columns path,labels; path relative to the csv; labels separated by one space)"
	case cfg.Layout == LayoutSingle:
		m.Naming = "<split>/<colour>_<garment>/<id>.png"
	default:
		m.Naming = "<split>/<labels sorted, joined by '_'>/<id>.png"
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", MetadataFile, err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, MetadataFile), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	return nil
}
