package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/metrics"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
	"github.com/tailorml/tailor/train"
)

func init() {
	register("train", "train a model on one machine from a shard set", runTrain)
	register("eval", "score a model on a split of a shard set", runEval)
}

func runTrain(ctx context.Context, env *Env) int {
	cfg := train.DefaultConfig()
	fs := newFlagSet(env, "train", "--data SHARDS", `
Trains SmallerVGGNet (sigmoid outputs, binary cross-entropy, Adam) on the train
split of a shard set made by 'tailor shard build', validates every epoch on the
val split, and keeps the best model. Writes OUT/model.tailor, OUT/history.csv,
OUT/history.png and each epoch's scalars as a TensorBoard event file in
OUT/tensorboard (tensorboard --logdir OUT/tensorboard); with a test split, scores the kept model on it and writes
OUT/test_metrics.json.`)
	fs.StringVar(&cfg.Data, "data", "", "shard set (a folder or store URL)")
	fs.StringVar(&cfg.Out, "out", cfg.Out, "output folder")
	fs.IntVar(&cfg.Epochs, "epochs", cfg.Epochs, "epochs")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "batch size")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "run seed: initial weights, shuffles, augmentation and dropout follow from it")
	cfg.Settings.AddFlags(fs)
	fs.BoolVar(&cfg.Augment.Enabled, "augment", cfg.Augment.Enabled, "augment training images (rotation, shifts, shear, zoom, flip)")
	fs.Var(&cfg.PosWeight, "pos-weight", posWeightHelp)
	fs.BoolVar(&cfg.BNEstimate, "bn-estimate", cfg.BNEstimate, "re-estimate BatchNorm statistics with the current weights before each evaluation and save")
	fs.IntVar(&cfg.BNBatches, "bn-batches", cfg.BNBatches, "training batches used to re-estimate BatchNorm statistics")
	fs.BoolVar(&cfg.EvalRunning, "eval-running-bn", cfg.EvalRunning, "also evaluate with the running-average BatchNorm statistics (history shows both)")
	fs.StringVar(&cfg.BestBy, "best-by", cfg.BestBy, "keep the model with the best validation 'loss' or 'map'")
	fs.IntVar(&cfg.Threads, "threads", cfg.Threads, "compute threads (0: all cores)")
	fs.IntVar(&cfg.MaxTrain, "max-train", 0, "use at most this many training records (0: all)")
	fs.IntVar(&cfg.MaxVal, "max-val", 0, "use at most this many validation records (0: all)")
	if code, done := parse(env, fs); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "tailor train: unexpected arguments %q\n", fs.Args())
		return 2
	}
	res, err := train.Run(ctx, cfg, env.Log, env.Stderr)
	if err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "kept the model of epoch %d: %s\nhistory: %s, %s\ntensorboard: tensorboard --logdir %s\n", res.Best, res.ModelPath,
		filepath.Join(cfg.Out, "history.csv"), filepath.Join(cfg.Out, "history.png"), filepath.Dir(res.EventFile))
	rep, err := evaluate(ctx, res.ModelPath, cfg.Data, shard.SplitTest, 0)
	if err != nil {
		env.Log.Info("no test evaluation", "reason", err)
		return 0
	}
	fmt.Fprintf(env.Stdout, "\ntest split, model of epoch %d:\n", res.Best)
	if err := rep.WriteTable(env.Stdout); err != nil {
		return fail(env, err)
	}
	if err := writeJSON(filepath.Join(cfg.Out, "test_metrics.json"), rep); err != nil {
		return fail(env, err)
	}
	return 0
}

// evaluate scores a saved model on a split of a shard set, with the model's
// thresholds.
func evaluate(ctx context.Context, modelPath, data, split string, max int) (*metrics.Report, error) {
	b, err := model.Load(modelPath)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, data)
	if err != nil {
		return nil, err
	}
	man, err := shard.LoadManifest(ctx, st)
	if err != nil {
		return nil, err
	}
	if err := compatible(b, man); err != nil {
		return nil, err
	}
	ds, err := eval.LoadSplit(ctx, st, man, split, max)
	if err != nil {
		return nil, err
	}
	if len(ds.Records) == 0 {
		return nil, fmt.Errorf("split %q is empty", split)
	}
	probs, err := eval.Predict(ctx, b, ds, 64)
	if err != nil {
		return nil, err
	}
	rep := metrics.Evaluate(b.Labels, probs, ds.Truth(), b.Thresholds)
	return &rep, nil
}

// compatible checks that a model reads a shard set's images and labels.
func compatible(b *model.Bundle, m *shard.Manifest) error {
	c := b.Net.Config()
	if m.Width != c.Size || m.Height != c.Size || m.Channels != c.Channels {
		return fmt.Errorf("model takes %dx%dx%d images, the shards hold %dx%dx%d", c.Size, c.Size, c.Channels, m.Width, m.Height, m.Channels)
	}
	if len(m.Labels) != len(b.Labels) {
		return fmt.Errorf("model has %d labels, the shards %d", len(b.Labels), len(m.Labels))
	}
	for i, l := range m.Labels {
		if b.Labels[i] != l {
			return fmt.Errorf("label %d is %q in the model and %q in the shards", i, b.Labels[i], l)
		}
	}
	return nil
}

func runEval(ctx context.Context, env *Env) int {
	fs := newFlagSet(env, "eval", "--model MODEL --data SHARDS", `
Scores a model on a split of a shard set: per-label precision, recall, F1,
average precision and support at the model's tuned thresholds; micro and macro
F1, mAP, Hamming loss and subset accuracy.`)
	modelPath := fs.String("model", "", "model file (from tailor train)")
	data := fs.String("data", "", "shard set (a folder or store URL)")
	split := fs.String("split", shard.SplitTest, "split to score")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if code, done := parse(env, fs); done {
		return code
	}
	if *modelPath == "" || *data == "" {
		fmt.Fprintln(env.Stderr, "tailor eval: --model and --data are required")
		return 2
	}
	rep, err := evaluate(ctx, *modelPath, *data, *split, 0)
	if err != nil {
		return fail(env, err)
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail(env, err)
		}
		return 0
	}
	if err := rep.WriteTable(env.Stdout); err != nil {
		return fail(env, err)
	}
	return 0
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
