package eval

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/tailorml/tailor/eval/tensorboard"
	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/metrics"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
)

// ValidatorConfig says how a net is judged at the end of each epoch.
type ValidatorConfig struct {
	Out         string // folder of model.tailor, history.csv, history.png
	BNEstimate  bool   // re-estimate BatchNorm statistics before scoring and saving
	BNBatches   int    // training batches for the re-estimation
	Batch       int    // their size
	EvalBatch   int
	EvalRunning bool   // also score with the running BatchNorm statistics
	BestBy      string // "loss" or "map"
	Seed        uint64
	Meta        map[string]string // copied into saved models
}

// Validator scores a net after each epoch the same way wherever it trained
// (single process, or the cluster's coordinator): optionally with the running
// BatchNorm statistics, then with statistics re-estimated for the current
// weights; it keeps the best model (with thresholds tuned on val) and writes
// the history. The net's running statistics are left as they were.
type Validator struct {
	Cfg        ValidatorConfig
	Labels     []string
	Mean, Std  []float32
	Train, Val *Dataset
	History    []Epoch
	Best       int // epoch of the saved model; 0 before any
	// Events, if set, gets every epoch's scores as TensorBoard scalars
	// (Epoch.Scalars), step the epoch.
	Events    *tensorboard.Writer
	bestScore float64
	haveBest  bool
	truth     []bool
	x         []float32
	recs      []*shard.Record
}

// ValidatorState is what a checkpoint keeps of a Validator: the history
// and the best score so far.
type ValidatorState struct {
	History   []Epoch `json:"history"`
	Best      int     `json:"best"`
	BestScore float64 `json:"best_score"`
	HaveBest  bool    `json:"have_best"`
}

// State returns the validator's history and best score.
func (v *Validator) State() ValidatorState {
	return ValidatorState{History: append([]Epoch(nil), v.History...), Best: v.Best, BestScore: v.bestScore, HaveBest: v.haveBest}
}

// SetState continues from a state State returned (a resumed run).
func (v *Validator) SetState(s ValidatorState) {
	v.History, v.Best, v.bestScore, v.haveBest = append([]Epoch(nil), s.History...), s.Best, s.BestScore, s.HaveBest
}

// ModelPath is where the best model is saved.
func (v *Validator) ModelPath() string { return filepath.Join(v.Cfg.Out, "model.tailor") }

// EndEpoch scores net after epoch ep (ep.Epoch counts from 1), saves it if it
// is the best so far, appends to the history and rewrites the history files.
func (v *Validator) EndEpoch(ctx context.Context, net *model.Net, ep Epoch) (Epoch, bool, error) {
	if v.truth == nil {
		v.truth = v.Val.Truth()
	}
	bundle := func(th []float32) *model.Bundle {
		if th == nil {
			th = make([]float32, len(v.Labels))
			for i := range th {
				th[i] = metrics.DefaultThreshold
			}
		}
		return &model.Bundle{Net: net, Labels: v.Labels, Mean: v.Mean, Std: v.Std, Thresholds: th}
	}
	if v.Cfg.EvalRunning {
		probs, err := Predict(ctx, bundle(nil), v.Val, v.Cfg.EvalBatch)
		if err != nil {
			return ep, false, err
		}
		s := Score(v.Labels, probs, v.truth)
		ep.Running = &s
	}
	saved := snapshotBN(net)
	defer restoreBN(net, saved)
	if v.Cfg.BNEstimate {
		if err := v.estimateBN(ctx, net, ep.Epoch-1); err != nil {
			return ep, false, err
		}
	}
	probs, err := Predict(ctx, bundle(nil), v.Val, v.Cfg.EvalBatch)
	if err != nil {
		return ep, false, err
	}
	ep.Val = Score(v.Labels, probs, v.truth)
	v.History = append(v.History, ep)
	crit := ep.Val.Loss
	if v.Cfg.BestBy == "map" {
		crit = -ep.Val.MAP
	}
	improved := !v.haveBest || crit < v.bestScore
	if improved {
		v.bestScore, v.haveBest, v.Best = crit, true, ep.Epoch
		b := bundle(metrics.TuneThresholds(probs, v.truth, len(v.Val.Records), len(v.Labels)))
		b.Meta = map[string]string{}
		for k, val := range v.Cfg.Meta {
			b.Meta[k] = val
		}
		b.Meta["epoch"] = fmt.Sprint(ep.Epoch)
		b.Meta["val_loss"] = fmt.Sprintf("%.5f", ep.Val.Loss)
		b.Meta["val_map"] = fmt.Sprintf("%.5f", ep.Val.MAP)
		b.Meta["seed"] = fmt.Sprint(v.Cfg.Seed)
		b.Meta["saved"] = time.Now().UTC().Format(time.RFC3339)
		if err := b.Save(v.ModelPath()); err != nil {
			return ep, false, err
		}
	}
	if err := WriteHistory(v.Cfg.Out, v.History); err != nil {
		return ep, improved, err
	}
	if v.Events != nil {
		if err := v.Events.Scalars(int64(ep.Epoch), ep.Scalars(v.Labels)); err != nil {
			return ep, improved, fmt.Errorf("epoch %d: %w", ep.Epoch, err)
		}
	}
	return ep, improved, nil
}

// StartSession marks in the event file (Events, if set) that training goes
// on from the epoch after the history's last: TensorBoard drops scalars
// that earlier files, or this one before a rollback, hold for that epoch
// and later ones.
func (v *Validator) StartSession(msg string) error {
	if v.Events == nil {
		return nil
	}
	next := 1
	if n := len(v.History); n > 0 {
		next = v.History[n-1].Epoch + 1
	}
	return v.Events.SessionStart(int64(next), msg)
}

// estimateBN recomputes the BatchNorm statistics over BNBatches batches of
// un-augmented training images (the distribution evaluation sees).
func (v *Validator) estimateBN(ctx context.Context, net *model.Net, epoch int) error {
	d, b := v.Train, v.Cfg.Batch
	n := d.C * d.H * d.W
	if len(v.x) < b*n {
		v.x = make([]float32, b*n)
	}
	order := input.Order(len(d.Records), v.Cfg.Seed^0xb0b, epoch)
	net.BeginBNEstimate()
	for s := 0; s < v.Cfg.BNBatches && (s+1)*b <= len(order); s++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		v.recs = d.records(v.recs, order[s*b:(s+1)*b])
		input.FillInputs(v.x[:b*n], v.recs, d.H, d.W, d.C, input.Augment{}, v.Mean, v.Std, 0, 0)
		if err := net.EstimateBNBatch(v.x[:b*n], b); err != nil {
			return err
		}
	}
	return net.EndBNEstimate()
}

func snapshotBN(net *model.Net) [][]float32 {
	var s [][]float32
	for _, b := range net.BN() {
		s = append(s, append([]float32(nil), b.Mean...), append([]float32(nil), b.Variance...))
	}
	return s
}

func restoreBN(net *model.Net, s [][]float32) {
	for i, b := range net.BN() {
		copy(b.Mean, s[2*i])
		copy(b.Variance, s[2*i+1])
	}
}
