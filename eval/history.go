package eval

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/tailorml/tailor/eval/plot"
	"github.com/tailorml/tailor/eval/tensorboard"
)

// Epoch is one row of the history.
type Epoch struct {
	Epoch     int
	TrainLoss float64
	Val       Scores
	Running   *Scores // with the running BatchNorm statistics, if asked for
	LR        float64
	Seconds   float64
	ImgPerSec float64 // training images per second of compute
}

// Scores summarise an evaluation.
type Scores struct {
	Loss, MAP, MacroF1, SubsetAcc float64
	// AP is each label's average precision, NaN for a label without
	// positives (it goes to the TensorBoard event file, not into
	// history.csv or checkpoints).
	AP []float64 `json:"-"`
	// F1 is each label's F1 at the default threshold (0.5), Support its
	// positives in the split (for the dashboard's table; not kept in
	// history.csv or checkpoints either).
	F1      []float64 `json:"-"`
	Support []int     `json:"-"`
}

// Equal reports whether two evaluations scored the same, bit for bit (a
// NaN equals a NaN).
func (s Scores) Equal(o Scores) bool {
	same := func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }
	if !same(s.Loss, o.Loss) || !same(s.MAP, o.MAP) || !same(s.MacroF1, o.MacroF1) || !same(s.SubsetAcc, o.SubsetAcc) || len(s.AP) != len(o.AP) {
		return false
	}
	for i := range s.AP {
		if !same(s.AP[i], o.AP[i]) {
			return false
		}
	}
	return true
}

// WriteHistory writes dir/history.csv and dir/history.png (loss per epoch,
// training and validation, and validation mAP).
func WriteHistory(dir string, h []Epoch) error {
	var b bytes.Buffer
	b.WriteString("epoch,train_loss,val_loss,val_map,val_macro_f1,val_subset_acc,val_loss_running_bn,val_map_running_bn,lr,seconds,img_per_s\n")
	for _, e := range h {
		rl, rm := math.NaN(), math.NaN()
		if e.Running != nil {
			rl, rm = e.Running.Loss, e.Running.MAP
		}
		fmt.Fprintf(&b, "%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6g,%.2f,%.1f\n", e.Epoch, e.TrainLoss, e.Val.Loss, e.Val.MAP, e.Val.MacroF1,
			e.Val.SubsetAcc, rl, rm, e.LR, e.Seconds, e.ImgPerSec)
	}
	if err := writeAtomic(filepath.Join(dir, "history.csv"), b.Bytes()); err != nil {
		return err
	}
	x := make([]float64, len(h))
	series := map[string][]float64{}
	for i, e := range h {
		x[i] = float64(e.Epoch)
		series["train loss"] = append(series["train loss"], e.TrainLoss)
		series["val loss"] = append(series["val loss"], e.Val.Loss)
		series["val mAP"] = append(series["val mAP"], e.Val.MAP)
		if e.Running != nil {
			series["val loss (running BN)"] = append(series["val loss (running BN)"], e.Running.Loss)
			series["val mAP (running BN)"] = append(series["val mAP (running BN)"], e.Running.MAP)
		}
	}
	loss := plot.Chart{Title: "Loss", XLabel: "epoch", YLabel: "binary cross-entropy"}
	acc := plot.Chart{Title: "Validation mAP", XLabel: "epoch", YLabel: "mAP"}
	for _, name := range []string{"train loss", "val loss", "val loss (running BN)"} {
		if len(series[name]) == len(x) {
			loss.Series = append(loss.Series, plot.Series{Name: name, X: x, Y: series[name]})
		}
	}
	for _, name := range []string{"val mAP", "val mAP (running BN)"} {
		if len(series[name]) == len(x) {
			acc.Series = append(acc.Series, plot.Series{Name: name, X: x, Y: series[name]})
		}
	}
	return plot.Panels(filepath.Join(dir, "history.png"), []plot.Chart{loss, acc})
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Scalars are the epoch's numbers as TensorBoard scalars (step: the
// epoch): train/loss, val/loss, val/mAP, val/macro_F1,
// val/subset_accuracy, val/AP/<label> for each label with positives,
// train/img_per_s, train/lr (when known), train/epoch_seconds, and with
// running BatchNorm statistics val_running_bn/loss and val_running_bn/mAP.
// `tailor train` and the cluster's leader write the same ones.
func (e Epoch) Scalars(labels []string) []tensorboard.Scalar {
	s := []tensorboard.Scalar{
		{Tag: "train/loss", Value: e.TrainLoss},
		{Tag: "val/loss", Value: e.Val.Loss},
		{Tag: "val/mAP", Value: e.Val.MAP},
		{Tag: "val/macro_F1", Value: e.Val.MacroF1},
		{Tag: "val/subset_accuracy", Value: e.Val.SubsetAcc},
	}
	for i, ap := range e.Val.AP {
		if i < len(labels) && !math.IsNaN(ap) {
			s = append(s, tensorboard.Scalar{Tag: "val/AP/" + labels[i], Value: ap})
		}
	}
	if e.Running != nil {
		s = append(s, tensorboard.Scalar{Tag: "val_running_bn/loss", Value: e.Running.Loss},
			tensorboard.Scalar{Tag: "val_running_bn/mAP", Value: e.Running.MAP})
	}
	s = append(s, tensorboard.Scalar{Tag: "train/img_per_s", Value: e.ImgPerSec})
	if e.LR > 0 {
		s = append(s, tensorboard.Scalar{Tag: "train/lr", Value: e.LR})
	}
	return append(s, tensorboard.Scalar{Tag: "train/epoch_seconds", Value: e.Seconds})
}
