package input

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Positive-weight modes (PosWeight.Mode).
const (
	PosWeightNone = "none" // every target weighs 1: the plain loss
	PosWeightAuto = "auto" // neg/pos of the training split's label counts
	PosWeightFile = "file" // the weights a file gave, by label
)

// PosWeight says how the loss weighs each label's positive targets, as
// PyTorch's BCEWithLogitsLoss(pos_weight): with a label present in 2 % of
// the training images, auto gives its positives weight 49, so the rare
// label's few positives count as much as its many negatives. It is a
// flag.Value: "none", "auto", or the path of a CSV file of label,weight
// lines (read when the flag is set, so that the weights travel with a
// cluster run's spec; labels it does not name weigh 1).
type PosWeight struct {
	Mode    string             `json:"mode"`
	Weights map[string]float64 `json:"weights,omitempty"` // Mode file
	File    string             `json:"file,omitempty"`    // Mode file: where they came from
}

// String is the flag's value: the mode, or the file's path.
func (p *PosWeight) String() string {
	if p == nil || p.Mode == "" {
		return PosWeightNone
	}
	if p.Mode == PosWeightFile {
		return p.File
	}
	return p.Mode
}

// Set parses the flag: none, auto or a file of label,weight lines.
func (p *PosWeight) Set(s string) error {
	switch s {
	case "", PosWeightNone:
		*p = PosWeight{Mode: PosWeightNone}
		return nil
	case PosWeightAuto:
		*p = PosWeight{Mode: PosWeightAuto}
		return nil
	}
	f, err := os.Open(s)
	if err != nil {
		return fmt.Errorf("pos-weight: want none, auto or a file of label,weight lines: %w", err)
	}
	defer f.Close()
	w, err := ReadPosWeights(f)
	if err != nil {
		return fmt.Errorf("pos-weight %s: %w", s, err)
	}
	*p = PosWeight{Mode: PosWeightFile, Weights: w, File: s}
	return nil
}

// ReadPosWeights reads label,weight lines (a header line "label,weight" is
// allowed); every weight must be a positive number, every label once.
func ReadPosWeights(r io.Reader) (map[string]float64, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 2
	cr.Comment = '#'
	w := map[string]float64{}
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		label, val := strings.TrimSpace(rec[0]), strings.TrimSpace(rec[1])
		if line == 1 && strings.EqualFold(label, "label") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil || !(v > 0) || v > 1e6 {
			return nil, fmt.Errorf("line %d: weight %q of %q: want a positive number", line, val, label)
		}
		if _, dup := w[label]; dup {
			return nil, fmt.Errorf("line %d: label %q twice", line, label)
		}
		w[label] = v
	}
	if len(w) == 0 {
		return nil, errors.New("no weights")
	}
	return w, nil
}

// Validate checks the mode.
func (p PosWeight) Validate() error {
	switch p.Mode {
	case "", PosWeightNone, PosWeightAuto:
		return nil
	case PosWeightFile:
		if len(p.Weights) == 0 {
			return errors.New("pos-weight file: no weights")
		}
		return nil
	}
	return fmt.Errorf("pos-weight mode %q: want none, auto or a file", p.Mode)
}

// For returns the weight of each of labels (the model's output order), or
// nil for none. counts[j] is the number of training records carrying
// labels[j], of records in all. Auto gives neg/pos, and 1 to a label no
// training record carries; a file naming a label the model lacks is an
// error.
func (p PosWeight) For(labels []string, counts []int64, records int64) ([]float32, error) {
	switch p.Mode {
	case "", PosWeightNone:
		return nil, nil
	case PosWeightAuto:
		if len(counts) != len(labels) || records < 1 {
			return nil, fmt.Errorf("pos-weight auto: %d label counts of %d records for %d labels", len(counts), records, len(labels))
		}
		w := make([]float32, len(labels))
		for j, c := range counts {
			w[j] = 1
			if c > 0 && c < records {
				w[j] = float32(float64(records-c) / float64(c))
			}
		}
		return w, nil
	case PosWeightFile:
		w := make([]float32, len(labels))
		for j, l := range labels {
			w[j] = 1
			if v, ok := p.Weights[l]; ok {
				w[j] = float32(v)
			}
		}
		for l := range p.Weights {
			if !slices.Contains(labels, l) {
				return nil, fmt.Errorf("pos-weight %s: label %q is not one of the model's", p.File, l)
			}
		}
		return w, nil
	}
	return nil, p.Validate()
}
