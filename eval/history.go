package eval

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/tailorml/tailor/eval/plot"
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
