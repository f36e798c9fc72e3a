// Package metrics scores multi-label classifiers: per-label precision, recall,
// F1 and average precision, their micro and macro summaries, Hamming loss and
// subset accuracy, and per-label decision thresholds tuned for F1.
//
// Every function takes n samples × L labels as flat row-major slices: the
// score of sample i for label j is probs[i*L+j] and its ground truth is
// truth[i*L+j]. A sample is predicted positive for label j when its score is
// at or above that label's threshold (score >= threshold).
//
// Conventions follow scikit-learn where it has one (zero_division=0 for
// precision, recall and F1; average_precision_score for AP); where this
// package departs from it, the doc comment says so.
package metrics

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
)

// DefaultThreshold is the decision threshold used for a label that has no
// tuned threshold (and by TuneThresholds for a label with no positives).
const DefaultThreshold float32 = 0.5

// LabelReport holds the scores of one label.
type LabelReport struct {
	Label     string  `json:"label"`
	Threshold float32 `json:"threshold"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
	// AP is the average precision of the label's scores (threshold-free).
	AP float64 `json:"ap"`
	// Support is the number of samples whose ground truth has the label.
	Support int `json:"support"`
	TP      int `json:"tp"`
	FP      int `json:"fp"`
	FN      int `json:"fn"`
}

// Report is the result of Evaluate.
type Report struct {
	Labels  []LabelReport `json:"labels"`
	Samples int           `json:"samples"`
	// MicroPrecision, MicroRecall and MicroF1 pool TP, FP and FN over all labels.
	MicroPrecision float64 `json:"micro_precision"`
	MicroRecall    float64 `json:"micro_recall"`
	MicroF1        float64 `json:"micro_f1"`
	// MacroF1 is the unweighted mean of the per-label F1 over all labels,
	// labels without positives included (sklearn's average="macro").
	MacroF1 float64 `json:"macro_f1"`
	// MAP is the mean of AP over the MAPLabels labels that have at least one
	// positive sample; 0 when there are none. scikit-learn's macro
	// average_precision_score instead counts such labels as AP 0.
	MAP       float64 `json:"map"`
	MAPLabels int     `json:"map_labels"`
	// HammingLoss is the fraction of the Samples×len(Labels) decisions that
	// are wrong.
	HammingLoss float64 `json:"hamming_loss"`
	// SubsetAccuracy is the fraction of samples whose every label decision is
	// right (exact match).
	SubsetAccuracy float64 `json:"subset_accuracy"`
}

// ratio returns a/b, or 0 when b is 0 (sklearn's zero_division=0).
func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// scored is one sample's score and ground truth for one label.
type scored struct {
	score float32
	pos   bool
}

// byScoreDesc orders by descending score. cmp.Compare puts NaN below every
// number, so NaN scores sort last, deterministically.
func byScoreDesc(a, b scored) int { return cmp.Compare(b.score, a.score) }

// AveragePrecision returns the average precision of scores against truth,
// computed as scikit-learn's average_precision_score does:
//
//	AP = Σ_k (R_k − R_{k−1}) · P_k
//
// where k runs over the distinct score values from the highest down, P_k and
// R_k are the precision and recall when every sample scoring at least that
// value is predicted positive, and R_0 = 0. Samples with equal scores enter
// together, at one threshold, so the order of ties does not matter. There is
// no interpolation.
//
// When truth has no positives, recall is undefined; scikit-learn (since 1.1)
// then sets recall to 1 at every threshold, warns "No positive class found in
// y_true", and returns 0. AveragePrecision returns 0 too, without a warning;
// Report.MAP leaves such labels out of its mean.
//
// It panics if the slices differ in length. It sorts a copy and allocates
// O(len(scores)).
func AveragePrecision(scores []float32, truth []bool) float64 {
	if len(scores) != len(truth) {
		panic(fmt.Sprintf("metrics: %d scores but %d truth values", len(scores), len(truth)))
	}
	buf := make([]scored, len(scores))
	for i, s := range scores {
		buf[i] = scored{s, truth[i]}
	}
	return averagePrecision(buf)
}

// averagePrecision sorts buf in place and returns its AP.
func averagePrecision(buf []scored) float64 {
	slices.SortFunc(buf, byScoreDesc)
	positives := 0
	for _, s := range buf {
		if s.pos {
			positives++
		}
	}
	if positives == 0 {
		return 0
	}
	var ap float64
	tp, prevTP := 0, 0
	for i, s := range buf {
		if s.pos {
			tp++
		}
		if i+1 < len(buf) && buf[i+1].score == s.score {
			continue // the threshold takes the whole tie group
		}
		if tp != prevTP {
			ap += float64(tp-prevTP) / float64(positives) * float64(tp) / float64(i+1)
			prevTP = tp
		}
	}
	return ap
}

// checkShape panics unless probs and truth hold n×l values.
func checkShape(probs []float32, truth []bool, l int) int {
	if l <= 0 {
		panic(fmt.Sprintf("metrics: %d labels", l))
	}
	if len(probs) != len(truth) || len(probs)%l != 0 {
		panic(fmt.Sprintf("metrics: %d probabilities and %d truth values do not fill rows of %d labels",
			len(probs), len(truth), l))
	}
	return len(probs) / l
}

// column copies label j of the n×l data into buf.
func column(buf []scored, probs []float32, truth []bool, l, j int) []scored {
	buf = buf[:0]
	for i := j; i < len(probs); i += l {
		buf = append(buf, scored{probs[i], truth[i]})
	}
	return buf
}

// Evaluate scores n samples of len(labels) labels. thresholds holds one
// decision threshold per label; nil means DefaultThreshold for every label.
// It panics if the slices' lengths do not fit together.
func Evaluate(labels []string, probs []float32, truth []bool, thresholds []float32) Report {
	l := len(labels)
	n := checkShape(probs, truth, l)
	if thresholds != nil && len(thresholds) != l {
		panic(fmt.Sprintf("metrics: %d thresholds for %d labels", len(thresholds), l))
	}
	r := Report{Labels: make([]LabelReport, l), Samples: n}
	for j, name := range labels {
		t := DefaultThreshold
		if thresholds != nil {
			t = thresholds[j]
		}
		r.Labels[j] = LabelReport{Label: name, Threshold: t}
	}

	exact := 0
	for i := 0; i < n; i++ {
		rowRight := true
		for j := 0; j < l; j++ {
			lr := &r.Labels[j]
			pred := probs[i*l+j] >= lr.Threshold
			switch actual := truth[i*l+j]; {
			case pred && actual:
				lr.TP++
			case pred:
				lr.FP++
				rowRight = false
			case actual:
				lr.FN++
				rowRight = false
			}
		}
		if rowRight {
			exact++
		}
	}

	buf := make([]scored, 0, n)
	var tp, fp, fn int
	var sumF1, sumAP float64
	for j := range r.Labels {
		lr := &r.Labels[j]
		lr.Support = lr.TP + lr.FN
		lr.Precision = ratio(lr.TP, lr.TP+lr.FP)
		lr.Recall = ratio(lr.TP, lr.Support)
		lr.F1 = ratio(2*lr.TP, 2*lr.TP+lr.FP+lr.FN)
		buf = column(buf, probs, truth, l, j)
		lr.AP = averagePrecision(buf)
		tp, fp, fn = tp+lr.TP, fp+lr.FP, fn+lr.FN
		sumF1 += lr.F1
		if lr.Support > 0 {
			sumAP += lr.AP
			r.MAPLabels++
		}
	}
	r.MicroPrecision = ratio(tp, tp+fp)
	r.MicroRecall = ratio(tp, tp+fn)
	r.MicroF1 = ratio(2*tp, 2*tp+fp+fn)
	r.MacroF1 = sumF1 / float64(l)
	if r.MAPLabels > 0 {
		r.MAP = sumAP / float64(r.MAPLabels)
	}
	r.HammingLoss = ratio(fp+fn, n*l)
	r.SubsetAccuracy = ratio(exact, n)
	return r
}

// TuneThresholds returns, for each of the l labels of the n×l data, the
// threshold that maximises that label's F1 on it (use validation data, not
// training data). Candidates are the cuts between distinct scores; the
// threshold returned is the midpoint between the lowest score kept positive
// and the next lower score (or that lowest score, when every sample is kept).
// Among equal F1 the highest threshold wins. A label with no positives gets
// DefaultThreshold. The result depends only on the data.
func TuneThresholds(probs []float32, truth []bool, n, l int) []float32 {
	if got := checkShape(probs, truth, l); got != n {
		panic(fmt.Sprintf("metrics: %d probabilities fill %d rows of %d labels, not %d", len(probs), got, l, n))
	}
	out := make([]float32, l)
	buf := make([]scored, 0, n)
	for j := range out {
		buf = column(buf, probs, truth, l, j)
		out[j] = bestF1Threshold(buf)
	}
	return out
}

// bestF1Threshold sorts buf in place and returns the F1-maximising threshold.
func bestF1Threshold(buf []scored) float32 {
	slices.SortFunc(buf, byScoreDesc)
	positives := 0
	for _, s := range buf {
		if s.pos {
			positives++
		}
	}
	if positives == 0 {
		return DefaultThreshold
	}
	bestF1, best := -1.0, DefaultThreshold
	tp := 0
	for i, s := range buf {
		if s.pos {
			tp++
		}
		if i+1 < len(buf) && buf[i+1].score == s.score {
			continue
		}
		// Predicting the top i+1 samples positive: FP = i+1-tp, FN = positives-tp.
		f1 := ratio(2*tp, tp+i+1+positives)
		if f1 > bestF1 {
			bestF1 = f1
			best = s.score
			if i+1 < len(buf) {
				best = between(buf[i+1].score, s.score)
			}
		}
	}
	return best
}

// between returns a threshold t with lo < t <= hi, near their midpoint.
func between(lo, hi float32) float32 {
	mid := float32((float64(lo) + float64(hi)) / 2)
	if !(mid > lo && mid <= hi) { // rounding, or a NaN
		return hi
	}
	return mid
}

// WriteTable writes r as an aligned text table, one row per label, followed
// by the summary lines.
func (r Report) WriteTable(w io.Writer) error {
	width := len("label")
	for _, lr := range r.Labels {
		width = max(width, len(lr.Label))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s  %9s  %9s  %9s  %9s  %9s  %7s\n", width,
		"label", "threshold", "precision", "recall", "f1", "ap", "support")
	for _, lr := range r.Labels {
		fmt.Fprintf(&b, "%-*s  %9.4f  %9.4f  %9.4f  %9.4f  %9.4f  %7d\n", width,
			lr.Label, lr.Threshold, lr.Precision, lr.Recall, lr.F1, lr.AP, lr.Support)
	}
	fmt.Fprintf(&b, "\nsamples          %d\n", r.Samples)
	fmt.Fprintf(&b, "micro precision  %.4f\n", r.MicroPrecision)
	fmt.Fprintf(&b, "micro recall     %.4f\n", r.MicroRecall)
	fmt.Fprintf(&b, "micro f1         %.4f\n", r.MicroF1)
	fmt.Fprintf(&b, "macro f1         %.4f\n", r.MacroF1)
	fmt.Fprintf(&b, "mAP              %.4f  (over %d of %d labels with positives)\n", r.MAP, r.MAPLabels, len(r.Labels))
	fmt.Fprintf(&b, "hamming loss     %.4f\n", r.HammingLoss)
	fmt.Fprintf(&b, "subset accuracy  %.4f\n", r.SubsetAccuracy)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write metrics table: %w", err)
	}
	return nil
}
