package shard

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Skip reasons: why an input was left out. They key Split.Skipped and
// Manifest.Skipped.
const (
	SkipHidden       = "hidden"          // name starts with '.', e.g. .DS_Store (never an error, even with Strict)
	SkipNotImage     = "not_image"       // extension or content is not JPEG, PNG, GIF, WebP or BMP
	SkipEmptyFile    = "empty_file"      // zero bytes
	SkipCorrupt      = "corrupt_image"   // the decoder failed
	SkipTooSmall     = "too_small"       // width or height below MinSide
	SkipTooLarge     = "too_large"       // file above MaxFileBytes or pixels above MaxSourcePixels
	SkipBadLabel     = "bad_label"       // folder name or CSV labels break the label rules
	SkipNoLabelDir   = "no_label_folder" // image directly in SRC or a split folder
	SkipBadPath      = "bad_path"        // path not UTF-8, too long, absolute, escaping, control characters
	SkipMissing      = "missing_file"    // CSV row names a file that does not exist
	SkipDuplicate    = "duplicate_row"   // CSV row repeats an earlier row's path
	SkipEmptyDir     = "empty_folder"    // a folder with nothing in it (hidden entries aside)
	SkipNotRegular   = "not_regular"     // symlink to a folder, device, socket, pipe
	SkipUnreadable   = "unreadable"      // an I/O or permission error reading it
	SkipOutsideSplit = "outside_split"   // a file next to train/, val/, test/
)

// CSVName is the file that switches a split (or the whole SRC) to CSV input.
const CSVName = "labels.csv"

var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true, ".gif": true, ".webp": true, ".bmp": true}

// input is one image to ingest.
type input struct {
	rel    string   // path relative to SRC, '/'-separated; becomes Record.Source
	abs    string   // OS path
	labels []string // valid, sorted, distinct
}

// splitInputs is what a scan found for one split.
type splitInputs struct {
	name    string
	kind    string // "folders" or "csv"
	inputs  []input
	skipped map[string]int64
}

// scanner walks SRC and collects inputs per split.
type scanner struct {
	cfg    *BuildConfig
	log    logger
	splits map[string]*splitInputs
	top    map[string]int64 // skips outside any split
	// route picks the split of a path relative to SRC; nil sends everything to fixed.
	route func(rel string) string
	fixed string
}

type logger interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
	Debug(msg string, args ...any)
}

// ParseFolderLabels returns the labels a folder name stands for: its
// '_'-separated parts, each with surrounding whitespace trimmed, sorted and
// with repeats dropped. Every part must be a valid label (see ValidLabel), so
// "blue__dress", "_dress" and "light blue_dress" are errors.
func ParseFolderLabels(name string) ([]string, error) {
	parts := strings.Split(name, "_")
	labels := make([]string, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("folder %q: empty label (doubled, leading or trailing '_')", name)
		}
		if err := ValidLabel(p); err != nil {
			return nil, fmt.Errorf("folder %q: %w", name, err)
		}
		labels = append(labels, p)
	}
	slices.Sort(labels)
	return slices.Compact(labels), nil
}

// ParseCSVLabels returns the labels of a CSV labels field: whitespace-separated,
// each a valid label, sorted and with repeats dropped. An empty field is an
// empty label set. It is ParseLabelList with LabelSepSpace.
func ParseCSVLabels(field string) ([]string, error) {
	return ParseLabelList(field, LabelSepSpace)
}

// splitByHash reports whether rel goes to val for the given fraction: the
// first 53 bits of SHA-256(rel), as a fraction of 2^53, below valFraction.
func splitByHash(rel string, valFraction float64) bool {
	if valFraction <= 0 {
		return false
	}
	sum := sha256.Sum256([]byte(rel))
	return binary.BigEndian.Uint64(sum[:8])>>11 < uint64(valFraction*(1<<53))
}

// scan finds the inputs of src. It returns the splits in ID order, the skips
// outside any split, and how the splits were chosen.
func scan(ctx context.Context, cfg *BuildConfig, src string, log logger) ([]*splitInputs, map[string]int64, string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, nil, "", fmt.Errorf("source: %w", err)
	}
	sc := &scanner{cfg: cfg, log: log, splits: map[string]*splitInputs{}, top: map[string]int64{}}
	var order []string
	splitBy := "directories"
	if !fi.IsDir() {
		// SRC is a CSV file: one pool, paths relative to its folder.
		if !strings.EqualFold(filepath.Ext(src), ".csv") {
			return nil, nil, "", fmt.Errorf("source %s: not a folder or a .csv file", src)
		}
		order, splitBy = sc.pool(), "path-hash"
		if err := sc.scanCSV(ctx, src, filepath.Dir(src), ""); err != nil {
			return nil, nil, "", err
		}
	} else {
		present, err := splitDirs(src)
		if err != nil {
			return nil, nil, "", err
		}
		if len(present) == 0 {
			order, splitBy = sc.pool(), "path-hash"
			if err := sc.scanRoot(ctx, src, ""); err != nil {
				return nil, nil, "", err
			}
		} else {
			order = present
			for _, name := range present {
				sc.splits[name] = &splitInputs{name: name, skipped: map[string]int64{}}
			}
			if err := sc.scanTop(src, present); err != nil {
				return nil, nil, "", err
			}
			for _, name := range present {
				sc.route, sc.fixed = nil, name
				if err := sc.scanRoot(ctx, filepath.Join(src, name), name+"/"); err != nil {
					return nil, nil, "", err
				}
			}
		}
	}
	out := make([]*splitInputs, 0, len(order))
	for _, name := range order {
		s := sc.splits[name]
		slices.SortFunc(s.inputs, func(a, b input) int { return strings.Compare(a.rel, b.rel) })
		if cfg.Shuffle {
			rng := rand.New(rand.NewPCG(cfg.Seed, splitSeed(name)))
			rng.Shuffle(len(s.inputs), func(i, j int) { s.inputs[i], s.inputs[j] = s.inputs[j], s.inputs[i] })
		}
		out = append(out, s)
	}
	return out, sc.top, splitBy, nil
}

// splitSeed is a split's stream of the shuffle.
func splitSeed(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// pool sets the scanner up for one pool split by path hash and returns the split order.
func (sc *scanner) pool() []string {
	order := []string{SplitTrain}
	if sc.cfg.ValFraction > 0 {
		order = append(order, SplitVal)
	}
	for _, n := range order {
		sc.splits[n] = &splitInputs{name: n, skipped: map[string]int64{}}
	}
	frac := sc.cfg.ValFraction
	sc.route = func(rel string) string {
		if splitByHash(rel, frac) {
			return SplitVal
		}
		return SplitTrain
	}
	return order
}

// splitDirs returns the split folders at src's top, in ID order. A val or
// test folder without train is an error.
func splitDirs(src string) ([]string, error) {
	var present []string
	for _, name := range splitOrder {
		fi, err := os.Stat(filepath.Join(src, name))
		if err == nil && fi.IsDir() {
			present = append(present, name)
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("source: %w", err)
		}
	}
	if len(present) > 0 && present[0] != SplitTrain {
		return nil, fmt.Errorf("source %s has %s/ but no train/ folder", src, strings.Join(present, "/, "))
	}
	return present, nil
}

// scanTop checks the top level of a SRC with split folders: other folders
// are an error (label folders beside split folders are surely a mistake),
// files are skipped and counted.
func (sc *scanner) scanTop(src string, present []string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	for _, e := range entries {
		if slices.Contains(present, e.Name()) {
			continue
		}
		if strings.HasPrefix(e.Name(), ".") {
			sc.top[SkipHidden]++
			continue
		}
		if e.IsDir() {
			return fmt.Errorf("source %s has split folders and also folder %q: move it into a split or out of SRC", src, e.Name())
		}
		sc.top[SkipOutsideSplit]++
		sc.log.Warn("skipped input", "path", e.Name(), "reason", SkipOutsideSplit)
		if sc.cfg.Strict {
			return fmt.Errorf("%s: %s (strict): %w", e.Name(), SkipOutsideSplit, ErrBadInput)
		}
	}
	return nil
}

// split returns the split a path relative to SRC belongs to.
func (sc *scanner) split(rel string) *splitInputs {
	if sc.route != nil {
		return sc.splits[sc.route(rel)]
	}
	return sc.splits[sc.fixed]
}

// skip counts a skipped input; with Strict it returns an error instead.
func (sc *scanner) skip(rel, reason string, detail error) error {
	s := sc.split(rel)
	s.skipped[reason]++
	args := []any{"split", s.name, "path", rel, "reason", reason}
	if detail != nil {
		args = append(args, "err", detail)
	}
	switch reason {
	case SkipHidden, SkipNotImage:
		sc.log.Debug("skipped input", args...)
	default:
		sc.log.Warn("skipped input", args...)
	}
	if sc.cfg.Strict && reason != SkipHidden {
		if detail != nil {
			return fmt.Errorf("%s: %s (strict): %v: %w", rel, reason, detail, ErrBadInput)
		}
		return fmt.Errorf("%s: %s (strict): %w", rel, reason, ErrBadInput)
	}
	return nil
}

func (sc *scanner) add(in input) {
	s := sc.split(in.rel)
	s.inputs = append(s.inputs, in)
}

// scanRoot scans a split folder or a pool: CSV if it holds labels.csv, else a
// tree of label folders. relPrefix is root's path relative to SRC plus "/".
func (sc *scanner) scanRoot(ctx context.Context, root, relPrefix string) error {
	csvPath := filepath.Join(root, CSVName)
	if fi, err := os.Stat(csvPath); err == nil && fi.Mode().IsRegular() {
		return sc.scanCSV(ctx, csvPath, root, relPrefix)
	}
	for _, s := range sc.splitsOf() {
		s.kind = "folders"
	}
	found := 0
	if err := sc.walk(ctx, root, relPrefix, true, &found); err != nil {
		return err
	}
	if found == 0 {
		sc.log.Warn("no images found", "folder", root)
	}
	return nil
}

// splitsOf returns the splits the current root feeds.
func (sc *scanner) splitsOf() []*splitInputs {
	if sc.route != nil {
		var out []*splitInputs
		for _, s := range sc.splits {
			out = append(out, s)
		}
		return out
	}
	return []*splitInputs{sc.splits[sc.fixed]}
}

// walk scans the label-folder tree at dir. isRoot marks the split or pool
// folder itself, whose files have no label folder.
func (sc *scanner) walk(ctx context.Context, dir, rel string, isRoot bool, found *int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if isRoot {
			return fmt.Errorf("source: %w", err)
		}
		return sc.skip(strings.TrimSuffix(rel, "/"), SkipUnreadable, err)
	}
	visible := 0
	var labels []string
	var labelErr error
	if !isRoot {
		labels, labelErr = ParseFolderLabels(path.Base(strings.TrimSuffix(rel, "/")))
	}
	for _, e := range entries {
		name := e.Name()
		erel := rel + name
		if strings.HasPrefix(name, ".") {
			if err := sc.skip(erel, SkipHidden, nil); err != nil {
				return err
			}
			continue
		}
		visible++
		full := filepath.Join(dir, name)
		mode := e.Type()
		if mode&fs.ModeSymlink != 0 {
			fi, err := os.Stat(full)
			if err != nil {
				if err := sc.skip(erel, SkipUnreadable, err); err != nil {
					return err
				}
				continue
			}
			if !fi.Mode().IsRegular() {
				if err := sc.skip(erel, SkipNotRegular, errors.New("symlink to a non-file")); err != nil {
					return err
				}
				continue
			}
			mode = 0
		}
		switch {
		case mode.IsDir():
			if err := sc.walk(ctx, full, erel+"/", false, found); err != nil {
				return err
			}
		case !mode.IsRegular():
			if err := sc.skip(erel, SkipNotRegular, nil); err != nil {
				return err
			}
		case !imageExts[strings.ToLower(filepath.Ext(name))]:
			if err := sc.skip(erel, SkipNotImage, nil); err != nil {
				return err
			}
		case isRoot:
			if err := sc.skip(erel, SkipNoLabelDir, nil); err != nil {
				return err
			}
		case labelErr != nil:
			if err := sc.skip(erel, SkipBadLabel, labelErr); err != nil {
				return err
			}
		default:
			if reason, err := sc.checkFile(erel, full); reason != "" {
				if err := sc.skip(erel, reason, err); err != nil {
					return err
				}
				continue
			}
			sc.add(input{rel: erel, abs: full, labels: labels})
			*found++
		}
	}
	if visible == 0 && !isRoot {
		return sc.skip(strings.TrimSuffix(rel, "/"), SkipEmptyDir, nil)
	}
	return nil
}

// checkFile applies the checks that need no decoding: path rules and size.
func (sc *scanner) checkFile(rel, full string) (string, error) {
	if err := validSource(rel); err != nil {
		return SkipBadPath, err
	}
	fi, err := os.Stat(full)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return SkipMissing, nil
	case err != nil:
		return SkipUnreadable, err
	case !fi.Mode().IsRegular():
		return SkipNotRegular, nil
	case fi.Size() == 0:
		return SkipEmptyFile, nil
	case fi.Size() > sc.cfg.MaxFileBytes:
		return SkipTooLarge, fmt.Errorf("%d bytes, limit %d", fi.Size(), sc.cfg.MaxFileBytes)
	}
	return "", nil
}

// validSource checks a path relative to SRC for use as Record.Source.
func validSource(rel string) error {
	if len(rel) > MaxSourceLen {
		return fmt.Errorf("path of %d bytes, limit %d", len(rel), MaxSourceLen)
	}
	if !utf8.ValidString(rel) {
		return errors.New("path is not UTF-8")
	}
	for _, r := range rel {
		if unicode.IsControl(r) || r == '\\' {
			return fmt.Errorf("path contains %q", r)
		}
	}
	return nil
}

// scanCSV reads a labels CSV whose paths are relative to root.
func (sc *scanner) scanCSV(ctx context.Context, csvPath, root, relPrefix string) error {
	for _, s := range sc.splitsOf() {
		s.kind = "csv"
	}
	f, err := os.Open(csvPath)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: empty file, want a header row with columns path and labels", csvPath)
	} else if err != nil {
		return fmt.Errorf("%s: %w", csvPath, err)
	}
	pathCol, labelsCol := -1, -1
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\uFEFF") // Excel's byte-order mark
		}
		switch strings.ToLower(strings.TrimSpace(h)) {
		case "path":
			if pathCol >= 0 {
				return fmt.Errorf("%s: header has two path columns", csvPath)
			}
			pathCol = i
		case "labels":
			if labelsCol >= 0 {
				return fmt.Errorf("%s: header has two labels columns", csvPath)
			}
			labelsCol = i
		}
	}
	if pathCol < 0 || labelsCol < 0 {
		return fmt.Errorf("%s: header %q lacks a path or labels column", csvPath, header)
	}
	// Read every row first: the label separator is detected over the
	// whole file.
	type row struct {
		line        int
		path, label string
	}
	var rows []row
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, csv.ErrFieldCount) {
			return fmt.Errorf("%s: %w (labels separated by ',' need quotes: \"dress,blue\")", csvPath, err)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", csvPath, err) // *csv.ParseError names the line
		}
		line, _ := cr.FieldPos(0)
		rows = append(rows, row{line: line, path: r[pathCol], label: r[labelsCol]})
	}
	sep := sc.cfg.LabelSep
	if sep == LabelSepAuto {
		fields := make([]string, len(rows))
		for i, r := range rows {
			fields[i] = r.label
		}
		sep = DetectLabelSep(fields)
		sc.log.Info("labels.csv label separator", "file", csvPath, "sep", LabelSepName(sep))
	}
	if !sc.cfg.AllowOddLabels {
		var odd []oddExample
		for _, r := range rows {
			for _, l := range splitLabels(r.label, sep) {
				if sepInLabel(l, sep) != 0 {
					odd = append(odd, oddExample{where: fmt.Sprintf("line %d", r.line), label: l})
				}
			}
		}
		if len(odd) > 0 {
			return fmt.Errorf("%s: labels separated by %s, but %d labels hold another separator character, e.g. %s: "+
				"set --label-sep, or pass --allow-odd-labels to keep them: %w",
				csvPath, describeSep(sep), len(odd), oddExamples(odd), ErrOddLabels)
		}
	}
	seen := map[string]int{}
	for _, r := range rows {
		if err := ctx.Err(); err != nil {
			return err
		}
		line := r.line
		raw := strings.TrimSpace(r.path)
		p := path.Clean(raw)
		rel := relPrefix + p
		if raw == "" || strings.Contains(raw, `\`) || !fs.ValidPath(p) || p == "." {
			if err := sc.skip(relPrefix+raw, SkipBadPath, fmt.Errorf("line %d: path %q: want a relative '/'-separated path inside %s", line, raw, root)); err != nil {
				return err
			}
			continue
		}
		if first, dup := seen[p]; dup {
			if err := sc.skip(rel, SkipDuplicate, fmt.Errorf("line %d repeats line %d", line, first)); err != nil {
				return err
			}
			continue
		}
		seen[p] = line
		labels, err := ParseLabelList(r.label, sep)
		if err != nil {
			if err := sc.skip(rel, SkipBadLabel, fmt.Errorf("line %d: %w", line, err)); err != nil {
				return err
			}
			continue
		}
		if reason, err := sc.checkFile(rel, filepath.Join(root, filepath.FromSlash(p))); reason != "" {
			if err == nil {
				err = fmt.Errorf("line %d", line)
			} else {
				err = fmt.Errorf("line %d: %w", line, err)
			}
			if err := sc.skip(rel, reason, err); err != nil {
				return err
			}
			continue
		}
		sc.add(input{rel: rel, abs: filepath.Join(root, filepath.FromSlash(p)), labels: labels})
	}
	return nil
}

func describeSep(sep string) string {
	if sep == LabelSepSpace {
		return "whitespace"
	}
	return fmt.Sprintf("%q", sep)
}
