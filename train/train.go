// Package train is the single-process trainer: it reads a shard set, trains
// SmallerVGGNet with Adam, validates every epoch, keeps the best model and
// writes the history as CSV and a plot. The cluster's worker reuses its
// batching; the coordinator reuses its history and evaluation.
package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"time"

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
	Adam    optim.AdamConfig // Decay 0 with DecayAuto means LR/Epochs
	// DecayAuto sets Adam's decay to LR/Epochs, as the tutorial does.
	DecayAuto bool
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
		Augment: input.DefaultAugment(), Adam: optim.DefaultAdam(0), DecayAuto: true,
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
	adam := c.Adam
	if c.DecayAuto {
		adam.Decay = 0
	}
	if err := adam.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

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

// Result is what a run produced.
type Result struct {
	History   []Epoch
	Best      int // epoch of the kept model
	ModelPath string
	Test      *metrics.Report // on the test split with the kept model, if there is one
}

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

// Targets writes the 0/1 label vectors of records idx into y.
func (d *Dataset) Targets(y []float32, idx []int) {
	clear(y[:len(idx)*d.Labels])
	for i, r := range idx {
		for _, l := range d.Records[r].Labels {
			y[i*d.Labels+int(l)] = 1
		}
	}
}

// FillBatch writes a batch of records as net inputs x (NCHW, normalised,
// augmented as a pure function of (seed, epoch, record id) when aug is
// enabled) and 0/1 targets y (len(recs)·labels). Workers and the
// single-process trainer prepare batches with it, so both feed the net the
// same numbers.
func FillBatch(x, y []float32, recs []*shard.Record, labels, h, w, c int, aug input.Augment, mean, std []float32, seed uint64, epoch int) {
	n := c * h * w
	clear(y[:len(recs)*labels])
	for i, rec := range recs {
		aug.Apply(x[i*n:(i+1)*n], rec.Pixels, h, w, c, mean, std, input.SampleSeed(seed, epoch, rec.ID))
		for _, l := range rec.Labels {
			y[i*labels+int(l)] = 1
		}
	}
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

// Inputs writes the normalised images of records idx into x (NCHW), augmented
// when aug is enabled, with the augmentation a pure function of (seed, epoch,
// record id).
func (d *Dataset) Inputs(x []float32, idx []int, aug input.Augment, mean, std []float32, seed uint64, epoch int) {
	n := d.C * d.H * d.W
	for i, r := range idx {
		rec := d.Records[r]
		aug.Apply(x[i*n:(i+1)*n], rec.Pixels, d.H, d.W, d.C, mean, std, input.SampleSeed(seed, epoch, rec.ID))
	}
}

// Predict runs the bundle's net over all records (no augmentation) and
// returns the probabilities, n×labels.
func Predict(ctx context.Context, b *model.Bundle, d *Dataset, batch int) ([]float32, error) {
	l := d.Labels
	n := d.C * d.H * d.W
	probs := make([]float32, len(d.Records)*l)
	x := make([]float32, batch*n)
	idx := make([]int, 0, batch)
	for start := 0; start < len(d.Records); start += batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := min(start+batch, len(d.Records))
		idx = idx[:0]
		for i := start; i < end; i++ {
			idx = append(idx, i)
		}
		k := end - start
		d.Inputs(x[:k*n], idx, input.Augment{}, b.Mean, b.Std, 0, 0)
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

// Run trains a model as cfg says. Progress bars go to progress (nil: none).
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
	trainSet, err := LoadSplit(ctx, st, man, shard.SplitTrain, cfg.MaxTrain)
	if err != nil {
		return nil, fmt.Errorf("load train split: %w", err)
	}
	if len(trainSet.Records) < cfg.Batch {
		return nil, fmt.Errorf("train split has %d records, fewer than one batch of %d", len(trainSet.Records), cfg.Batch)
	}
	valSet, err := LoadSplit(ctx, st, man, "val", cfg.MaxVal)
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
	adamCfg := cfg.Adam
	if cfg.DecayAuto {
		adamCfg.Decay = adamCfg.LR / float64(cfg.Epochs)
	}
	params := net.Params()
	sizes := make([]int, len(params))
	pdata := make([][]float32, len(params))
	for i, p := range params {
		sizes[i] = len(p.Data)
		pdata[i] = p.Data
	}
	opt, err := optim.NewAdam(adamCfg, sizes)
	if err != nil {
		return nil, err
	}
	tr := &trainer{cfg: cfg, net: net, opt: opt, pdata: pdata, train: trainSet, val: valSet, man: man, mean: mean, std: std, log: log}
	v := &Validator{Cfg: ValidatorConfig{Out: cfg.Out, BNEstimate: cfg.BNEstimate, BNBatches: cfg.BNBatches, Batch: cfg.Batch,
		EvalBatch: cfg.EvalBatch, EvalRunning: cfg.EvalRunning, BestBy: cfg.BestBy, Seed: cfg.Seed,
		Meta: map[string]string{"data": cfg.Data, "interpolation": man.Build.Interpolation}},
		Labels: man.Labels, Mean: mean, Std: std, Train: trainSet, Val: valSet}
	res := &Result{Best: -1, ModelPath: v.ModelPath()}
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
	bestScore  float64
	haveBest   bool
	truth      []bool
	x          []float32
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
	return ep, improved, WriteHistory(v.Cfg.Out, v.History)
}

// estimateBN recomputes the BatchNorm statistics over BNBatches batches of
// un-augmented training images (the distribution evaluation sees).
func (v *Validator) estimateBN(ctx context.Context, net *model.Net, epoch int) error {
	d, b := v.Train, v.Cfg.Batch
	n := d.C * d.H * d.W
	if len(v.x) < b*n {
		v.x = make([]float32, b*n)
	}
	order := Order(len(d.Records), v.Cfg.Seed^0xb0b, epoch)
	net.BeginBNEstimate()
	for s := 0; s < v.Cfg.BNBatches && (s+1)*b <= len(order); s++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		d.Inputs(v.x[:b*n], order[s*b:(s+1)*b], input.Augment{}, v.Mean, v.Std, 0, 0)
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

func round(v float64) float64 { return math.Round(v*1e4) / 1e4 }

// Score summarises predictions against the truth at threshold 0.5 (mAP is
// threshold-free).
func Score(labels []string, probs []float32, truth []bool) Scores {
	rep := metrics.Evaluate(labels, probs, truth, nil)
	return Scores{Loss: BCE(probs, truth), MAP: rep.MAP, MacroF1: rep.MacroF1, SubsetAcc: rep.SubsetAccuracy}
}

type trainer struct {
	cfg        Config
	net        *model.Net
	opt        *optim.Adam
	pdata      [][]float32
	train, val *Dataset
	man        *shard.Manifest
	mean, std  []float32
	log        *slog.Logger
	x, y       []float32
	recs       []*shard.Record
}

// Order is the epoch's shuffle: a pure function of (seed, epoch).
func Order(n int, seed uint64, epoch int) []int {
	return rand.New(rand.NewPCG(seed, uint64(epoch)+0x5eed)).Perm(n)
}

func (t *trainer) epoch(ctx context.Context, epoch int, progressOut io.Writer) (Epoch, error) {
	cfg, d := t.cfg, t.train
	n := d.C * d.H * d.W
	if t.x == nil {
		t.x = make([]float32, cfg.Batch*n)
		t.y = make([]float32, cfg.Batch*d.Labels)
	}
	order := Order(len(d.Records), cfg.Seed, epoch)
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
			return Epoch{}, err
		}
		idx := order[s*cfg.Batch : min((s+1)*cfg.Batch, len(order))]
		k := len(idx)
		recs := t.recs[:0]
		for _, r := range idx {
			recs = append(recs, &d.Records[r])
		}
		t.recs = recs
		FillBatch(t.x, t.y, recs, d.Labels, d.H, d.W, d.C, cfg.Augment, t.mean, t.std, cfg.Seed, epoch)
		t0 := time.Now()
		loss, grads, err := t.net.TrainStep(t.x[:k*n], t.y[:k*d.Labels], k, model.StepOptions{
			Dropout: true, Seed: model.DropoutSeed(cfg.Seed, 0), Step: uint64(t.opt.Step()), BN: model.BNTrain,
		})
		if err != nil {
			return Epoch{}, err
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return Epoch{}, fmt.Errorf("epoch %d step %d: loss is %g", epoch+1, s, loss)
		}
		if err := t.opt.Update(t.pdata, grads); err != nil {
			return Epoch{}, err
		}
		compute += time.Since(t0)
		lossSum += loss * float64(k)
		seen += k
		bar.Add(int64(k))
	}
	bar.Finish()
	return Epoch{Epoch: epoch + 1, TrainLoss: lossSum / float64(seen), LR: lr, Seconds: time.Since(start).Seconds(),
		ImgPerSec: float64(seen) / compute.Seconds()}, nil
}
