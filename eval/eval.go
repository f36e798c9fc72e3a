// Package eval judges a net on a split: it loads a split into memory
// (LoadSplit), predicts over it (Predict) and scores the predictions (Score).
// Its Validator is the end-of-epoch judge shared by the single-process
// trainer and the cluster's leader: BatchNorm re-estimation, scores, threshold
// tuning, keeping the best model and writing the history (history.csv and
// history.png).
package eval

import (
	"context"
	"math"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/metrics"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// Dataset is a split loaded in memory with its targets.
type Dataset struct {
	Records []shard.Record
	Labels  int
	H, W, C int
}

// LoadSplit reads a split into memory; max > 0 keeps only the first max.
func LoadSplit(ctx context.Context, st store.Store, m *shard.Manifest, split string, max int) (*Dataset, error) {
	recs, err := shard.ReadSplit(ctx, st, m, split)
	if err != nil {
		return nil, err
	}
	if max > 0 && len(recs) > max {
		recs = recs[:max]
	}
	return &Dataset{Records: recs, Labels: len(m.Labels), H: m.Height, W: m.Width, C: m.Channels}, nil
}

// Truth returns the ground truth as flat bools, for metrics.
func (d *Dataset) Truth() []bool {
	t := make([]bool, len(d.Records)*d.Labels)
	for i, r := range d.Records {
		for _, l := range r.Labels {
			t[i*d.Labels+int(l)] = true
		}
	}
	return t
}

// records appends pointers to the records idx to dst[:0].
func (d *Dataset) records(dst []*shard.Record, idx []int) []*shard.Record {
	dst = dst[:0]
	for _, i := range idx {
		dst = append(dst, &d.Records[i])
	}
	return dst
}

// Predict runs the bundle's net over all records (no augmentation) and
// returns the probabilities, n×labels.
func Predict(ctx context.Context, b *model.Bundle, d *Dataset, batch int) ([]float32, error) {
	l := d.Labels
	n := d.C * d.H * d.W
	probs := make([]float32, len(d.Records)*l)
	x := make([]float32, batch*n)
	recs := make([]*shard.Record, 0, batch)
	for start := 0; start < len(d.Records); start += batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := min(start+batch, len(d.Records))
		recs = recs[:0]
		for i := start; i < end; i++ {
			recs = append(recs, &d.Records[i])
		}
		k := end - start
		input.FillInputs(x[:k*n], recs, d.H, d.W, d.C, input.Augment{}, b.Mean, b.Std, 0, 0)
		if err := b.Net.Predict(x[:k*n], k, probs[start*l:end*l]); err != nil {
			return nil, err
		}
	}
	return probs, nil
}

// BCE is the mean binary cross-entropy of probabilities against the truth,
// with probabilities clipped to [1e-7, 1−1e-7] as Keras does.
func BCE(probs []float32, truth []bool) float64 {
	const eps = 1e-7
	var s float64
	for i, p := range probs {
		q := math.Min(math.Max(float64(p), eps), 1-eps)
		if truth[i] {
			s -= math.Log(q)
		} else {
			s -= math.Log(1 - q)
		}
	}
	return s / float64(max(len(probs), 1))
}

// Score summarises predictions against the truth at threshold 0.5 (mAP is
// threshold-free).
func Score(labels []string, probs []float32, truth []bool) Scores {
	rep := metrics.Evaluate(labels, probs, truth, nil)
	ap := make([]float64, len(rep.Labels))
	f1 := make([]float64, len(rep.Labels))
	support := make([]int, len(rep.Labels))
	for i, l := range rep.Labels {
		f1[i], support[i] = l.F1, l.Support
		ap[i] = l.AP
		if l.Support == 0 {
			ap[i] = math.NaN()
		}
	}
	return Scores{Loss: BCE(probs, truth), MAP: rep.MAP, MacroF1: rep.MacroF1, SubsetAcc: rep.SubsetAccuracy, AP: ap, F1: f1, Support: support}
}
