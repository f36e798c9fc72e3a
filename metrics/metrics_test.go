package metrics

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

const eps = 1e-12

func near(a, b float64) bool { return math.Abs(a-b) <= eps }

func bools(s string) []bool {
	out := make([]bool, len(s))
	for i, c := range s {
		out[i] = c == '1'
	}
	return out
}

func TestAveragePrecision(t *testing.T) {
	tests := []struct {
		name   string
		scores []float32
		truth  string
		want   float64
	}{
		// The example in scikit-learn's average_precision_score docs.
		{"sklearn docs", []float32{0.1, 0.4, 0.35, 0.8}, "0011", 0.5 + 0.5*2.0/3},
		{"perfect", []float32{0.9, 0.8, 0.3, 0.1}, "1100", 1},
		{"worst", []float32{0.1, 0.5, 0.9}, "100", 1.0 / 3},
		{"all positive", []float32{0.1, 0.3, 0.2, 0.1, 0.1}, "11111", 1},
		{"no positives", []float32{0.1, 0.4, 0.35, 0.8}, "0000", 0},
		{"empty", nil, "", 0},
		// Ties form one threshold: the group {.5,.5,.5} holds 2 of the 2
		// positives, so R jumps 0 -> 1 at P = 2/3.
		{"tie group", []float32{0.5, 0.5, 0.5, 0.2}, "1010", 2.0 / 3},
		{"all tied", []float32{0.5, 0.5}, "10", 0.5},
		// scikit-learn issue 4223: ties at .9 (10), .8 (5), .7 (5), .6 (5)
		// with one positive in each of the first three groups.
		{"tied blocks", []float32{
			.9, .9, .9, .9, .9, .9, .9, .9, .9, .9,
			.8, .8, .8, .8, .8, .7, .7, .7, .7, .7, .6, .6, .6, .6, .6,
		}, "1000000000100001000000000", (1.0/10 + 2.0/15 + 3.0/20) / 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AveragePrecision(tt.scores, bools(tt.truth))
			if !near(got, tt.want) {
				t.Errorf("AveragePrecision = %.15f, want %.15f", got, tt.want)
			}
		})
	}
}

func TestAveragePrecisionTieOrderIrrelevant(t *testing.T) {
	a := AveragePrecision([]float32{0.7, 0.7, 0.7, 0.2}, bools("1001"))
	b := AveragePrecision([]float32{0.7, 0.7, 0.7, 0.2}, bools("0011"))
	if a != b {
		t.Errorf("AP depends on order within a tie: %v vs %v", a, b)
	}
}

// bruteAP computes AP from its definition: for every distinct score t, from
// the highest, precision and recall of predicting score >= t positive.
func bruteAP(scores []float32, truth []bool) float64 {
	positives := 0
	for _, p := range truth {
		if p {
			positives++
		}
	}
	if positives == 0 {
		return 0
	}
	var ths []float32
	for _, s := range scores {
		seen := false
		for _, t := range ths {
			seen = seen || t == s
		}
		if !seen {
			ths = append(ths, s)
		}
	}
	// selection sort, descending
	for i := range ths {
		for j := i + 1; j < len(ths); j++ {
			if ths[j] > ths[i] {
				ths[i], ths[j] = ths[j], ths[i]
			}
		}
	}
	var ap, prevR float64
	for _, t := range ths {
		tp, pp := 0, 0
		for i, s := range scores {
			if s >= t {
				pp++
				if truth[i] {
					tp++
				}
			}
		}
		r := float64(tp) / float64(positives)
		ap += (r - prevR) * float64(tp) / float64(pp)
		prevR = r
	}
	return ap
}

func TestAveragePrecisionMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		n := 1 + rng.IntN(40)
		levels := 2 + rng.IntN(12) // few levels: many ties
		scores := make([]float32, n)
		truth := make([]bool, n)
		for i := range scores {
			scores[i] = float32(rng.IntN(levels)) / float32(levels)
			truth[i] = rng.Float64() < 0.3+0.4*float64(scores[i])
		}
		got, want := AveragePrecision(scores, truth), bruteAP(scores, truth)
		if math.Abs(got-want) > 1e-12 {
			t.Fatalf("trial %d: AveragePrecision(%v, %v) = %v, want %v", trial, scores, truth, got, want)
		}
	}
}

// example is 4 samples × 3 labels; see TestEvaluate for the hand count.
var (
	exLabels = []string{"a", "bb", "c"}
	exProbs  = []float32{
		0.9, 0.2, 0.6, // a TP, bb TN, c FP
		0.4, 0.7, 0.1, // a FN, bb TP, c TN
		0.8, 0.6, 0.3, // a FP, bb TP, c TN
		0.1, 0.3, 0.2, // all TN: the only exact row
	}
	exTruth = bools("100" + "110" + "010" + "000")
)

func TestEvaluate(t *testing.T) {
	r := Evaluate(exLabels, exProbs, exTruth, nil)
	wantLabels := []LabelReport{
		{Label: "a", Threshold: 0.5, Precision: 0.5, Recall: 0.5, F1: 0.5, AP: 1*0.5 + 2.0/3*0.5, Support: 2, TP: 1, FP: 1, FN: 1},
		{Label: "bb", Threshold: 0.5, Precision: 1, Recall: 1, F1: 1, AP: 1, Support: 2, TP: 2},
		{Label: "c", Threshold: 0.5, Support: 0, FP: 1},
	}
	for j, want := range wantLabels {
		got := r.Labels[j]
		if got.Label != want.Label || got.Threshold != want.Threshold || got.Support != want.Support ||
			got.TP != want.TP || got.FP != want.FP || got.FN != want.FN ||
			!near(got.Precision, want.Precision) || !near(got.Recall, want.Recall) ||
			!near(got.F1, want.F1) || !near(got.AP, want.AP) {
			t.Errorf("label %d = %+v, want %+v", j, got, want)
		}
	}
	sums := []struct {
		name      string
		got, want float64
	}{
		{"micro precision", r.MicroPrecision, 3.0 / 5},
		{"micro recall", r.MicroRecall, 3.0 / 4},
		{"micro f1", r.MicroF1, 6.0 / 9},
		{"macro f1", r.MacroF1, 1.5 / 3},
		{"mAP", r.MAP, (2.0/3*0.5 + 0.5 + 1) / 2},
		{"hamming loss", r.HammingLoss, 3.0 / 12},
		{"subset accuracy", r.SubsetAccuracy, 1.0 / 4},
	}
	for _, s := range sums {
		if !near(s.got, s.want) {
			t.Errorf("%s = %v, want %v", s.name, s.got, s.want)
		}
	}
	if r.Samples != 4 || r.MAPLabels != 2 {
		t.Errorf("samples, map labels = %d, %d; want 4, 2", r.Samples, r.MAPLabels)
	}
}

func TestEvaluateEdges(t *testing.T) {
	tests := []struct {
		name       string
		probs      []float32
		truth      string
		thresholds []float32
		wantMicro  float64
		wantMacro  float64
		wantMAP    float64
		wantExact  float64
		wantHam    float64
	}{
		{"perfect", []float32{0.9, 0.1, 0.2, 0.8}, "1001", nil, 1, 1, 1, 1, 0},
		// c never occurs and is never predicted: F1 0 by zero_division=0,
		// which pulls macro F1 down but not micro F1 or mAP.
		{"absent label", []float32{0.9, 0.1, 0.2, 0.1}, "1000", nil, 1, 0.5, 1, 1, 0},
		// One sample: x's only score is a positive (AP 1 whatever the
		// threshold), y has no positives and is left out of mAP.
		{"all wrong", []float32{0.1, 0.9}, "10", nil, 0, 0, 1, 0, 1},
		{"score equal to threshold is positive", []float32{0.3, 0.29}, "10", []float32{0.3, 0.3}, 1, 0.5, 1, 1, 0},
		{"no samples", nil, "", nil, 0, 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Evaluate([]string{"x", "y"}, tt.probs, bools(tt.truth), tt.thresholds)
			got := []float64{r.MicroF1, r.MacroF1, r.MAP, r.SubsetAccuracy, r.HammingLoss}
			want := []float64{tt.wantMicro, tt.wantMacro, tt.wantMAP, tt.wantExact, tt.wantHam}
			for i := range got {
				if !near(got[i], want[i]) {
					t.Errorf("micro F1, macro F1, mAP, subset acc, hamming = %v, want %v", got, want)
					break
				}
			}
		})
	}
}

func TestEvaluatePanicsOnBadShape(t *testing.T) {
	tests := []struct {
		name       string
		probs      []float32
		truth      []bool
		thresholds []float32
	}{
		{"ragged", make([]float32, 3), make([]bool, 3), nil},
		{"truth length", make([]float32, 4), make([]bool, 2), nil},
		{"thresholds length", make([]float32, 4), make([]bool, 4), []float32{0.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			Evaluate([]string{"x", "y"}, tt.probs, tt.truth, tt.thresholds)
		})
	}
}

func TestReportJSON(t *testing.T) {
	b, err := json.Marshal(Evaluate(exLabels, exProbs, exTruth, nil))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"labels", "samples", "micro_f1", "macro_f1", "map", "map_labels", "hamming_loss", "subset_accuracy"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON has no %q: %s", k, b)
		}
	}
	first := m["labels"].([]any)[0].(map[string]any)
	for _, k := range []string{"label", "threshold", "precision", "recall", "f1", "ap", "support"} {
		if _, ok := first[k]; !ok {
			t.Errorf("label JSON has no %q: %v", k, first)
		}
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := Evaluate(exLabels, exProbs, exTruth, nil).WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(buf.String(), "\n")
	want := []string{
		"label  threshold  precision     recall         f1         ap  support",
		"a         0.5000     0.5000     0.5000     0.5000     0.8333        2",
		"bb        0.5000     1.0000     1.0000     1.0000     1.0000        2",
		"c         0.5000     0.0000     0.0000     0.0000     0.0000        0",
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i, lines[i], w)
		}
	}
	for _, s := range []string{"micro f1         0.6667", "mAP              0.9167  (over 2 of 3 labels with positives)", "subset accuracy  0.2500"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, buf.String())
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, bytes.ErrTooLarge }

func TestWriteTableError(t *testing.T) {
	if err := Evaluate(exLabels, exProbs, exTruth, nil).WriteTable(failWriter{}); err == nil {
		t.Error("no error from a failing writer")
	}
}

func TestTuneThresholds(t *testing.T) {
	tests := []struct {
		name   string
		scores []float32
		truth  string
		want   float32
	}{
		{"separable", []float32{0.2, 0.9, 0.4, 0.7}, "0101", 0.55},
		// desc: .9T .8F .7T .3T .1F; F1 per cut .5 .4 .667 .857 .75.
		{"best cut keeps a negative", []float32{0.1, 0.3, 0.7, 0.8, 0.9}, "01101", 0.2},
		{"no positives", []float32{0.1, 0.9}, "00", DefaultThreshold},
		// {.5T,.5F} gives 2/3, adding .2F gives 1/2: cut between .2 and .5.
		{"tie", []float32{0.5, 0.5, 0.2}, "100", 0.35},
		{"all positive", []float32{0.3, 0.6}, "11", 0.3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := TuneThresholds(tt.scores, bools(tt.truth), len(tt.scores), 1)
			if math.Abs(float64(got[0]-tt.want)) > 1e-6 {
				t.Errorf("threshold = %v, want %v", got[0], tt.want)
			}
		})
	}
}

func TestTuneThresholdsSeparates(t *testing.T) {
	// Label 0 is separable at any t in (0.3, 0.6]; label 1 in (0.05, 0.1].
	rng := rand.New(rand.NewPCG(3, 4))
	const n, l = 200, 2
	probs := make([]float32, n*l)
	truth := make([]bool, n*l)
	for i := range n {
		pos0, pos1 := rng.IntN(2) == 0, rng.IntN(4) == 0
		truth[i*l], truth[i*l+1] = pos0, pos1
		probs[i*l] = 0.3 * rng.Float32()
		if pos0 {
			probs[i*l] = 0.6 + 0.4*rng.Float32()
		}
		probs[i*l+1] = 0.05 * rng.Float32()
		if pos1 {
			probs[i*l+1] = 0.1 + 0.01*rng.Float32()
		}
	}
	th := TuneThresholds(probs, truth, n, l)
	r := Evaluate([]string{"p", "q"}, probs, truth, th)
	if r.Labels[0].F1 != 1 || r.Labels[1].F1 != 1 || r.SubsetAccuracy != 1 {
		t.Errorf("thresholds %v give F1 %v, %v and subset accuracy %v; want all 1",
			th, r.Labels[0].F1, r.Labels[1].F1, r.SubsetAccuracy)
	}
	if again := TuneThresholds(probs, truth, n, l); again[0] != th[0] || again[1] != th[1] {
		t.Errorf("second run gave %v, first %v", again, th)
	}
}

func TestTuneThresholdsIsOptimal(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for trial := range 100 {
		n := 1 + rng.IntN(30)
		probs := make([]float32, n)
		truth := make([]bool, n)
		for i := range probs {
			probs[i] = float32(rng.IntN(10)) / 10
			truth[i] = rng.Float32() < probs[i]
		}
		tuned := Evaluate([]string{"x"}, probs, truth, TuneThresholds(probs, truth, n, 1)).Labels[0].F1
		for _, cand := range probs {
			if f1 := Evaluate([]string{"x"}, probs, truth, []float32{cand}).Labels[0].F1; f1 > tuned+1e-12 {
				t.Fatalf("trial %d: threshold %v gives F1 %v, tuned threshold only %v", trial, cand, f1, tuned)
			}
		}
	}
}

func TestBetween(t *testing.T) {
	lo := float32(0.5)
	hi := math.Nextafter32(lo, 1)
	if got := between(lo, hi); !(got > lo && got <= hi) {
		t.Errorf("between(%v, %v) = %v, not in (lo, hi]", lo, hi, got)
	}
}
