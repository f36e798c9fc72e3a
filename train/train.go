// Package train is the single-process trainer: it reads a shard set and
// trains SmallerVGGNet with Adam, one process, one loop. Batches come from
// package input (the epoch's order and the batch assembly the cluster's
// workers use too); the end-of-epoch validation, the kept model and the
// history from package eval (the cluster's leader uses the same).
package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/eval/tensorboard"
	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/internal/progress"
	"github.com/tailorml/tailor/metrics"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/optim"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// Config is one training run. Start from DefaultConfig.
type Config struct {
	Data    string // shard store: a path or URL (see store.Open)
	Out     string // folder for the model, history and plot
	Epochs  int
	Batch   int
	Seed    uint64
	Augment input.Augment
	// PosWeight weighs each label's positive targets in the loss (none,
	// auto: neg/pos of the training counts, or a file).
	PosWeight input.PosWeight
	// Settings is the optimizer, as a cluster run's spec has it: Adam,
	// with its decay LR/Epochs if DecayAuto.
	optim.Settings
	// BNEstimate re-estimates the BatchNorm statistics with the current
	// weights over BNBatches training batches before each evaluation and
	// before saving a model.
	BNEstimate bool
	BNBatches  int
	// EvalRunning also evaluates with the running (moving-average) BatchNorm
	// statistics each epoch, to show what re-estimation changes.
	EvalRunning bool
	// BestBy picks the kept model: "loss" (lowest validation loss) or "map".
	BestBy    string
	EvalBatch int
	Threads   int // compute threads (GOMAXPROCS and BLAS); 0 = all cores
	// MaxTrain and MaxVal cap the records used (0 = all), for quick runs.
	MaxTrain, MaxVal int
}

// DefaultConfig is the tutorial's training setting on this net.
func DefaultConfig() Config {
	return Config{
		Out: "out", Epochs: 30, Batch: 32, Seed: 1,
		Augment: input.DefaultAugment(), Settings: optim.DefaultSettings(),
		BNEstimate: true, BNBatches: 50, BestBy: "loss", EvalBatch: 64,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Data == "" {
		errs = append(errs, errors.New("no shard data given"))
	}
	if c.Out == "" {
		errs = append(errs, errors.New("no output folder given"))
	}
	if c.Epochs < 1 {
		errs = append(errs, fmt.Errorf("epochs %d: want at least 1", c.Epochs))
	}
	if c.Batch < 2 {
		errs = append(errs, fmt.Errorf("batch %d: want at least 2 (BatchNorm needs two samples)", c.Batch))
	}
	if c.EvalBatch < 1 {
		errs = append(errs, fmt.Errorf("eval batch %d: want at least 1", c.EvalBatch))
	}
	if c.BNEstimate && c.BNBatches < 1 {
		errs = append(errs, fmt.Errorf("batchnorm re-estimation over %d batches: want at least 1", c.BNBatches))
	}
	if c.BestBy != "loss" && c.BestBy != "map" {
		errs = append(errs, fmt.Errorf("best-by %q: want loss or map", c.BestBy))
	}
	if c.Threads < 0 || c.MaxTrain < 0 || c.MaxVal < 0 {
		errs = append(errs, errors.New("threads and record caps must not be negative"))
	}
	if err := c.Augment.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.PosWeight.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.For(c.Epochs).Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Result is what a run produced.
type Result struct {
	History   []eval.Epoch
	Best      int // epoch of the kept model
	ModelPath string
	Test      *metrics.Report // on the test split with the kept model, if there is one
	EventFile string          // the TensorBoard event file of the run's scalars
}

// TensorBoardDir is the folder under Config.Out of the TensorBoard event
// files (tensorboard --logdir OUT/tensorboard).
const TensorBoardDir = "tensorboard"

// Run trains a model as cfg says. Progress bars go to progress (nil: none).
// Each epoch's scores also go to a TensorBoard event file in
// Out/tensorboard (a new file per run; earlier ones stay).
func Run(ctx context.Context, cfg Config, log *slog.Logger, progressOut io.Writer) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("train config: %w", err)
	}
	if cfg.Threads > 0 {
		runtime.GOMAXPROCS(cfg.Threads)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output folder: %w", err)
	}
	st, err := store.Open(ctx, cfg.Data)
	if err != nil {
		return nil, err
	}
	man, err := shard.LoadManifest(ctx, st)
	if err != nil {
		return nil, err
	}
	if man.Width != man.Height {
		return nil, fmt.Errorf("images are %dx%d: the net wants square images", man.Width, man.Height)
	}
	trainSet, err := eval.LoadSplit(ctx, st, man, shard.SplitTrain, cfg.MaxTrain)
	if err != nil {
		return nil, fmt.Errorf("load train split: %w", err)
	}
	if len(trainSet.Records) < cfg.Batch {
		return nil, fmt.Errorf("train split has %d records, fewer than one batch of %d", len(trainSet.Records), cfg.Batch)
	}
	valSet, err := eval.LoadSplit(ctx, st, man, "val", cfg.MaxVal)
	if err != nil {
		return nil, fmt.Errorf("load val split (ingest with a val split or --val-fraction): %w", err)
	}
	if len(valSet.Records) == 0 {
		return nil, errors.New("val split is empty")
	}
	log.Info("data", "train", len(trainSet.Records), "val", len(valSet.Records), "labels", len(man.Labels), "size", man.Width)

	net, err := model.New(model.DefaultConfig(man.Width, len(man.Labels)), cfg.Seed)
	if err != nil {
		return nil, err
	}
	mean, std := man.Normalization()
	opt, pdata, err := Optimizer(cfg.For(cfg.Epochs), net)
	if err != nil {
		return nil, err
	}
	posW, err := PosWeights(cfg.PosWeight, man)
	if err != nil {
		return nil, err
	}
	if posW != nil {
		log.Info("positive weights", "mode", cfg.PosWeight.String(), "weights", posW)
	}
	tr := &trainer{cfg: cfg, net: net, opt: opt, pdata: pdata, train: trainSet, val: valSet, man: man, mean: mean, std: std, log: log, posW: posW}
	v := &eval.Validator{Cfg: eval.ValidatorConfig{Out: cfg.Out, BNEstimate: cfg.BNEstimate, BNBatches: cfg.BNBatches, Batch: cfg.Batch,
		EvalBatch: cfg.EvalBatch, EvalRunning: cfg.EvalRunning, BestBy: cfg.BestBy, Seed: cfg.Seed,
		Meta: map[string]string{"data": cfg.Data, shard.MetaInterpolation: man.Build.Interpolation, shard.MetaResize: man.Build.Resize}},
		Labels: man.Labels, Mean: mean, Std: std, Train: trainSet, Val: valSet}
	if v.Events, err = tensorboard.Create(filepath.Join(cfg.Out, TensorBoardDir)); err != nil {
		return nil, err
	}
	defer v.Events.Close()
	res := &Result{Best: -1, ModelPath: v.ModelPath(), EventFile: v.Events.Path()}
	for epoch := 0; epoch < cfg.Epochs; epoch++ {
		ep, err := tr.epoch(ctx, epoch, progressOut)
		if err != nil {
			return res, err
		}
		ep, improved, err := v.EndEpoch(ctx, net, ep)
		res.History, res.Best = v.History, v.Best
		if err != nil {
			return res, err
		}
		log.Info("epoch", "epoch", epoch+1, "of", cfg.Epochs, "train_loss", round(ep.TrainLoss), "val_loss", round(ep.Val.Loss),
			"val_map", round(ep.Val.MAP), "val_macro_f1", round(ep.Val.MacroF1), "img_per_s", math.Round(ep.ImgPerSec), "saved", improved)
	}
	return res, nil
}

// Optimizer is the trainer's optimizer for net: Adam over net.Params(),
// each tensor a kernel as the net marks it (model.Param.Kernel), and the
// slices it updates (aliases of the net's weights, in that order).
func Optimizer(cfg optim.AdamConfig, net *model.Net) (*optim.Adam, [][]float32, error) {
	params := net.Params()
	ts := make([]optim.Tensor, len(params))
	data := make([][]float32, len(params))
	for i, p := range params {
		ts[i] = optim.Tensor{Size: len(p.Data), Kernel: p.Kernel}
		data[i] = p.Data
	}
	opt, err := optim.NewAdamFor(cfg, ts)
	return opt, data, err
}

// PosWeights are the loss's positive weights of a run on man's data, in
// the model's label order (nil for none), from the training split's label
// counts: the same as a cluster worker's (worker/run.go).
func PosWeights(p input.PosWeight, man *shard.Manifest) ([]float32, error) {
	if p.Mode == "" || p.Mode == input.PosWeightNone {
		return nil, nil
	}
	sp, err := man.Split(shard.SplitTrain)
	if err != nil {
		return nil, err
	}
	return p.For(man.Labels, sp.LabelCounts, sp.Records)
}

func round(v float64) float64 { return math.Round(v*1e4) / 1e4 }

type trainer struct {
	cfg        Config
	net        *model.Net
	opt        *optim.Adam
	pdata      [][]float32
	train, val *eval.Dataset
	man        *shard.Manifest
	mean, std  []float32
	log        *slog.Logger
	x, y       []float32
	recs       []*shard.Record
	posW       []float32 // the loss's positive weights (nil: none)
}

func (t *trainer) epoch(ctx context.Context, epoch int, progressOut io.Writer) (eval.Epoch, error) {
	cfg, d := t.cfg, t.train
	n := d.C * d.H * d.W
	if t.x == nil {
		t.x = make([]float32, cfg.Batch*n)
		t.y = make([]float32, cfg.Batch*d.Labels)
	}
	order := input.Order(len(d.Records), cfg.Seed, epoch)
	steps := len(order) / cfg.Batch
	if rest := len(order) % cfg.Batch; rest >= 2 {
		steps++
	}
	bar := progress.New(progressOut, int64(steps*cfg.Batch), fmt.Sprintf("epoch %d/%d", epoch+1, cfg.Epochs))
	start := time.Now()
	var compute time.Duration
	var lossSum float64
	seen := 0
	lr := t.opt.LR()
	for s := 0; s < steps; s++ {
		if err := ctx.Err(); err != nil {
			return eval.Epoch{}, err
		}
		idx := order[s*cfg.Batch : min((s+1)*cfg.Batch, len(order))]
		k := len(idx)
		recs := t.recs[:0]
		for _, r := range idx {
			recs = append(recs, &d.Records[r])
		}
		t.recs = recs
		input.FillBatch(t.x, t.y, recs, d.Labels, d.H, d.W, d.C, cfg.Augment, t.mean, t.std, cfg.Seed, epoch)
		t0 := time.Now()
		loss, grads, err := t.net.TrainStep(t.x[:k*n], t.y[:k*d.Labels], k, model.StepOptions{
			Dropout: true, Seed: model.DropoutSeed(cfg.Seed, 0), Step: uint64(t.opt.Step()), BN: model.BNTrain, PosWeight: t.posW,
		})
		if err != nil {
			return eval.Epoch{}, err
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return eval.Epoch{}, fmt.Errorf("epoch %d step %d: loss is %g", epoch+1, s, loss)
		}
		if err := t.opt.Update(t.pdata, grads); err != nil {
			return eval.Epoch{}, err
		}
		compute += time.Since(t0)
		lossSum += loss * float64(k)
		seen += k
		bar.Add(int64(k))
	}
	bar.Finish()
	return eval.Epoch{Epoch: epoch + 1, TrainLoss: lossSum / float64(seen), LR: lr, Seconds: time.Since(start).Seconds(),
		ImgPerSec: float64(seen) / compute.Seconds()}, nil
}
