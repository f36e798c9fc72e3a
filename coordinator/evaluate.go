package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/eval/tensorboard"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/metrics"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// evaluator judges the weights at every epoch's end with the code `tailor
// train` uses (eval.Validator: BatchNorm statistics re-estimated, the val
// split scored, history.csv and the best model kept), and scores the kept
// model on the test split once the run is over. It works on the leader's
// copy of the net, whose tensors the leader pulls from the parameter
// servers before calling endEpoch.
type evaluator struct {
	val *eval.Validator
	// events is the term's TensorBoard event file (out/tensorboard), a
	// copy of which goes to the store at eventsObject after every epoch
	events       *tensorboard.Writer
	eventsStore  store.Store
	eventsObject string
	// lastEpoch is the newest epoch of the history, for the progress
	// record (read by its publisher while the epoch loop writes it)
	lastEpoch atomic.Pointer[eval.Epoch]
	net       *model.Net
	st        store.Store
	man       *shard.Manifest
	out       string
	epochs    int
	log       *slog.Logger
}

// newEvaluator loads the train split (for BatchNorm re-estimation) and the
// val split, and creates the output folder.
func newEvaluator(ctx context.Context, spec job.Spec, st store.Store, man *shard.Manifest, net *model.Net, log *slog.Logger) (*evaluator, error) {
	trainSet, err := eval.LoadSplit(ctx, st, man, shard.SplitTrain, 0)
	if err != nil {
		return nil, err
	}
	valSet, err := eval.LoadSplit(ctx, st, man, shard.SplitVal, 0)
	if err != nil {
		return nil, fmt.Errorf("the cluster validates on a val split: %w", err)
	}
	mean, std := man.Normalization()
	if err := os.MkdirAll(spec.Out, 0o755); err != nil {
		return nil, err
	}
	// BatchNorm is re-estimated over BNBatches batches of the global batch:
	// the images one process training with that batch uses
	val := &eval.Validator{Cfg: eval.ValidatorConfig{Out: spec.Out, BNEstimate: spec.BNEstimate, BNBatches: spec.BNBatches, Batch: spec.Batch * max(1, spec.Workers),
		EvalBatch: 64, EvalRunning: spec.EvalRunning, BestBy: spec.BestBy, Seed: spec.Seed,
		Meta: map[string]string{"run": spec.Run, "data": spec.Data, "mode": string(spec.Mode), shard.MetaInterpolation: man.Build.Interpolation, shard.MetaResize: man.Build.Resize}},
		Labels: man.Labels, Mean: mean, Std: std, Train: trainSet, Val: valSet}
	return &evaluator{val: val, net: net, st: st, man: man, out: spec.Out, epochs: spec.Epochs, log: log}, nil
}

// endEpoch validates the net's weights at the end of ep (its training
// numbers filled in), logs the epoch with the live workers' count, and
// reports whether the model was kept as the best so far.
func (e *evaluator) endEpoch(ctx context.Context, ep eval.Epoch, workers int) (bool, error) {
	ep, improved, err := e.val.EndEpoch(ctx, e.net, ep)
	if err != nil {
		return false, err
	}
	e.lastEpoch.Store(&ep)
	e.log.Info("epoch", "epoch", ep.Epoch, "of", e.epochs, "train_loss", round4(ep.TrainLoss), "val_loss", round4(ep.Val.Loss),
		"val_map", round4(ep.Val.MAP), "img_per_s", math.Round(ep.ImgPerSec), "workers", workers, "saved", improved)
	e.uploadEvents(ctx)
	return improved, nil
}

// openEvents starts the term's TensorBoard event file in out/tensorboard
// (a new file beside any earlier term's) and names its copy in the store:
// the tensorboard/ folder beside the job's checkpoints.
func (e *evaluator) openEvents(loc checkpoint.Location, spec job.Spec) error {
	w, err := tensorboard.Create(filepath.Join(e.out, TensorBoardDir))
	if err != nil {
		return err
	}
	e.events, e.val.Events = w, w
	e.eventsStore, e.eventsObject = loc.Store, loc.RunDir(spec.Run, spec.JobID)+TensorBoardDir+"/"+w.Name()
	e.log.Info("tensorboard scalars", "file", w.Path(), "store_object", e.eventsObject)
	return nil
}

// TensorBoardDir is the folder of the TensorBoard event files, in the
// leader's output folder and beside the job's checkpoints in the store.
const TensorBoardDir = "tensorboard"

// uploadEvents copies the event file to the store; a failure is a
// warning (the next epoch's upload copies the whole file again).
func (e *evaluator) uploadEvents(ctx context.Context) {
	if e.events == nil || e.eventsStore == nil {
		return
	}
	b, err := os.ReadFile(e.events.Path())
	if err == nil {
		err = e.eventsStore.Put(ctx, e.eventsObject, bytes.NewReader(b), int64(len(b)))
	}
	if err != nil {
		e.log.Warn("tensorboard event file not copied to the store", "object", e.eventsObject, "err", err)
	}
}

// closeEvents closes the event file.
func (e *evaluator) closeEvents() {
	if e == nil {
		return
	}
	if err := e.events.Close(); err != nil {
		e.log.Warn("tensorboard event file", "err", err)
	}
}

// last is the newest validated epoch, nil before any (nil-safe).
func (e *evaluator) last() *eval.Epoch {
	if e == nil {
		return nil
	}
	return e.lastEpoch.Load()
}

// restored notes the history a checkpoint brought back (a resume).
func (e *evaluator) restored() {
	if h := e.val.History; len(h) > 0 {
		ep := h[len(h)-1]
		e.lastEpoch.Store(&ep)
	}
}

// testReport scores the kept model on the test split, if there is one,
// into test_metrics.txt.
func (e *evaluator) testReport(ctx context.Context) error {
	if _, err := e.man.Split(shard.SplitTest); err != nil {
		return err
	}
	b, err := model.Load(e.val.ModelPath())
	if err != nil {
		return err
	}
	ds, err := eval.LoadSplit(ctx, e.st, e.man, shard.SplitTest, 0)
	if err != nil {
		return err
	}
	probs, err := eval.Predict(ctx, b, ds, 64)
	if err != nil {
		return err
	}
	rep := metrics.Evaluate(b.Labels, probs, ds.Truth(), b.Thresholds)
	f, err := os.Create(filepath.Join(e.out, "test_metrics.txt"))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := rep.WriteTable(f); err != nil {
		return err
	}
	e.log.Info("test", "map", round4(rep.MAP), "macro_f1", round4(rep.MacroF1), "subset_acc", round4(rep.SubsetAccuracy))
	return nil
}

func round4(v float64) float64 { return math.Round(v*1e4) / 1e4 }
