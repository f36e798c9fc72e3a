package shard

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// Label separators of a labels.csv field, for BuildConfig.LabelSep.
const (
	// LabelSepAuto detects the separator per file (DetectLabelSep).
	LabelSepAuto = ""
	// LabelSepSpace separates labels by runs of whitespace.
	LabelSepSpace = " "
)

// labelSepChars are the separators detection considers, in the order that
// breaks ties.
var labelSepChars = []string{";", "|", ","}

// ErrOddLabels means Build refused a label vocabulary that looks like the
// labels were split wrongly; BuildConfig.AllowOddLabels builds it anyway.
var ErrOddLabels = errors.New("shard: odd label vocabulary")

// Odd vocabulary thresholds: a build of at least oddMinImages images in
// which more than half of the labels, and at least oddMinSingles, are on a
// single image is refused.
const (
	oddMinImages  = 20
	oddMinSingles = 5
)

func checkLabelSep(sep string) error {
	switch sep {
	case LabelSepAuto, LabelSepSpace, ";", ",", "|":
		return nil
	}
	return fmt.Errorf("label separator %q: want auto, space, ';', ',' or '|'", sep)
}

// ParseLabelSep turns a --label-sep value into a BuildConfig.LabelSep:
// "auto" (or ""), "space", ";", ",", "|", or the names "semicolon", "comma"
// and "pipe".
func ParseLabelSep(s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return LabelSepAuto, nil
	case "space", "whitespace":
		return LabelSepSpace, nil
	case ";", "semicolon":
		return ";", nil
	case ",", "comma":
		return ",", nil
	case "|", "pipe":
		return "|", nil
	}
	return "", fmt.Errorf("label separator %q: want auto, space, ';', ',' or '|'", s)
}

// LabelSepName is the name of a separator as --label-sep takes it and logs show it.
func LabelSepName(sep string) string {
	switch sep {
	case LabelSepAuto:
		return "auto"
	case LabelSepSpace:
		return "space"
	}
	return sep
}

// DetectLabelSep returns the separator of one file's labels fields: of ';',
// '|' and ',', the one that occurs in the most fields (ties go in that
// order); whitespace when none of them occurs. A field that uses another
// separator then holds a label with a separator character in it, which
// Build refuses (see BuildConfig.AllowOddLabels).
func DetectLabelSep(fields []string) string {
	best, bestN := LabelSepSpace, 0
	for _, sep := range labelSepChars {
		n := 0
		for _, f := range fields {
			if strings.Contains(f, sep) {
				n++
			}
		}
		if n > bestN {
			best, bestN = sep, n
		}
	}
	return best
}

// splitLabels cuts a labels field into its trimmed, non-empty parts.
func splitLabels(field, sep string) []string {
	if sep == LabelSepSpace || sep == LabelSepAuto {
		return strings.Fields(field)
	}
	var out []string
	for p := range strings.SplitSeq(field, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ParseLabelList returns the labels of a labels field separated by sep
// (LabelSepSpace: runs of whitespace; ';', ',' or '|': that character, with
// whitespace around each label trimmed and empty parts dropped), each a
// valid label, sorted and with repeats dropped. An empty field is an empty
// label set.
func ParseLabelList(field, sep string) ([]string, error) {
	if err := checkLabelSep(sep); err != nil {
		return nil, err
	}
	labels := splitLabels(field, sep)
	for _, l := range labels {
		if err := ValidLabel(l); err != nil {
			return nil, err
		}
	}
	slices.Sort(labels)
	return slices.Compact(labels), nil
}

// sepInLabel returns a separator character other than sep that label
// holds (whitespace counts when sep is not whitespace), or 0.
func sepInLabel(label, sep string) rune {
	for _, r := range label {
		switch {
		case unicode.IsSpace(r):
			if sep != LabelSepSpace {
				return r
			}
		case r == ';' || r == ',' || r == '|':
			if string(r) != sep {
				return r
			}
		}
	}
	return 0
}

// oddExample is a label that suggests a wrong separator, and where it is.
type oddExample struct {
	where string // "labels.csv line 3"
	label string
}

func (e oddExample) String() string { return fmt.Sprintf("%q (%s)", e.label, e.where) }

func oddExamples(ex []oddExample) string {
	parts := make([]string, 0, 3)
	for _, e := range ex[:min(len(ex), 3)] {
		parts = append(parts, e.String())
	}
	return strings.Join(parts, ", ")
}

// checkSingletons refuses a vocabulary in which more than half of the
// labels, and at least oddMinSingles, are each on one image only, when
// there are at least oddMinImages images: the sign of labels split wrongly
// (or of a caption or an ID column taken for labels).
func checkSingletons(splits []*splitInputs) error {
	count := map[string]int{}
	images := 0
	for _, s := range splits {
		images += len(s.inputs)
		for _, in := range s.inputs {
			for _, l := range in.labels {
				count[l]++
			}
		}
	}
	var singles []string
	for l, n := range count {
		if n == 1 {
			singles = append(singles, l)
		}
	}
	if images < oddMinImages || len(singles) < oddMinSingles || 2*len(singles) <= len(count) {
		return nil
	}
	slices.Sort(singles)
	ex := make([]string, 0, 3)
	for _, l := range singles[:3] {
		ex = append(ex, fmt.Sprintf("%q", l))
	}
	return fmt.Errorf("%d of %d labels have a single image each, over %d images (e.g. %s): are the labels separated right? "+
		"Set --label-sep, or pass --allow-odd-labels to build anyway: %w",
		len(singles), len(count), images, strings.Join(ex, ", "), ErrOddLabels)
}
