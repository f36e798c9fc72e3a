package cli

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestRankLabels(t *testing.T) {
	labels := []string{"a", "b", "c", "d"}
	probs := []float32{0.2, 0.9, 0.2, 0.6}
	thr := []float32{0.1, 0.95, 0.5, 0.6}
	tests := []struct {
		name    string
		k       int
		want    []string
		present []bool
	}{
		{"all (0)", 0, []string{"b", "d", "a", "c"}, []bool{false, true, true, false}},
		{"top 2", 2, []string{"b", "d"}, []bool{false, true}},
		{"top 1", 1, []string{"b"}, []bool{false}},
		{"top more than there are", 9, []string{"b", "d", "a", "c"}, []bool{false, true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rankLabels(labels, probs, thr, tt.k)
			var names []string
			var present []bool
			for _, l := range got {
				names = append(names, l.Label)
				present = append(present, l.Present)
			}
			if !slices.Equal(names, tt.want) || !slices.Equal(present, tt.present) {
				t.Errorf("got %v present %v, want %v present %v", names, present, tt.want, tt.present)
			}
		})
	}
}

func TestWritePredictions(t *testing.T) {
	preds := []Prediction{
		{Image: "a.png", Labels: []LabelScore{
			{Label: "dress", Probability: float64(float32(0.875)), Threshold: float64(float32(0.4)), Present: true},
			{Label: "blue", Probability: float64(float32(0.0625)), Threshold: float64(float32(0.5))},
		}},
		{Image: "b,c.jpg", Error: "not JPEG, PNG or GIF"},
		{Image: "d.png", Labels: []LabelScore{
			{Label: "a_much_longer_label", Probability: float64(float32(0.3)), Threshold: float64(float32(0.25)), Present: true},
		}},
	}
	tests := []struct {
		format string
		preds  []Prediction
		want   string
	}{
		{"table", preds[:2], `a.png
  * dress:        87.5%
    blue:          6.2%
b,c.jpg
  error: not JPEG, PNG or GIF
`},
		{"table", preds[2:], `d.png
  * a_much_longer_label:  30.0%
`},
		{"csv", preds, `image,rank,label,probability,threshold,present,error
a.png,1,dress,0.875,0.4,true,
a.png,2,blue,0.0625,0.5,false,
"b,c.jpg",,,,,,"not JPEG, PNG or GIF"
d.png,1,a_much_longer_label,0.3,0.25,true,
`},
		{"json", preds[1:2], `[
  {
    "image": "b,c.jpg",
    "error": "not JPEG, PNG or GIF"
  }
]
`},
		{"json", nil, "[]\n"},
		{"csv", nil, "image,rank,label,probability,threshold,present,error\n"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var b bytes.Buffer
			if err := writePredictions(&b, tt.format, tt.preds); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tt.want)
			}
		})
	}
	if err := writePredictions(&bytes.Buffer{}, "xml", preds); err == nil || !strings.Contains(err.Error(), "table, json, csv") {
		t.Errorf("format xml: error %v, want one naming the formats", err)
	}
}

// TestPredictFlagErrors: bad flags are refused with exit code 2 before the
// model is read.
func TestPredictFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--format", "xml", "m.tailor", "x.png"}, `--format "xml": want table, json, csv`},
		{[]string{"--json", "--format", "csv", "m.tailor", "x.png"}, "--json and --format csv disagree"},
		{[]string{"--top", "-1", "m.tailor", "x.png"}, "--top -1"},
		{[]string{"--format", "json", "m.tailor"}, "want MODEL and at least one IMAGE"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := run(t, append([]string{"predict"}, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tt.want)
			}
		})
	}
}
