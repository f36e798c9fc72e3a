package train

import (
	"context"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"testing"

	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// testShards composes a toy data set from the committed Fashion-MNIST subset
// and ingests it.
func testShards(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	fc := fashion.DefaultConfig()
	fc.Source, fc.Out = "../fashion/testdata", filepath.Join(dir, "images")
	fc.Size, fc.Train, fc.Val, fc.Test = 24, 64, 32, 16
	if _, err := fashion.Generate(context.Background(), fc, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	bc := shard.DefaultBuildConfig()
	bc.Size = 24
	dst, err := store.NewLocal(filepath.Join(dir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shard.Build(context.Background(), bc, fc.Out, dst, nil, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	return dst.Root()
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Two runs with the same seed do the same arithmetic: the losses and the
// final weights are equal bit for bit. This is what exact resume builds on.
func TestRunIsDeterministic(t *testing.T) {
	data := testShards(t)
	var hist [2][]eval.Epoch
	var models [2]*model.Bundle
	for i := range hist {
		cfg := DefaultConfig()
		cfg.Data, cfg.Out = data, filepath.Join(t.TempDir(), "run")
		cfg.Epochs, cfg.Batch, cfg.BNBatches, cfg.Seed = 2, 16, 2, 11
		res, err := Run(context.Background(), cfg, quietLog(), nil)
		if err != nil {
			t.Fatal(err)
		}
		hist[i] = res.History
		if models[i], err = model.Load(res.ModelPath); err != nil {
			t.Fatal(err)
		}
	}
	for e := range hist[0] {
		a, b := hist[0][e], hist[1][e]
		if a.TrainLoss != b.TrainLoss || !a.Val.Equal(b.Val) {
			t.Errorf("epoch %d: run 1 %+v, run 2 %+v", e+1, a, b)
		}
	}
	for i, p := range models[0].Net.Params() {
		q := models[1].Net.Params()[i]
		for j := range p.Data {
			if math.Float32bits(p.Data[j]) != math.Float32bits(q.Data[j]) {
				t.Fatalf("%s[%d]: %g vs %g", p.Name, j, p.Data[j], q.Data[j])
			}
		}
	}
}

// Training lowers the loss, and re-estimated BatchNorm statistics are the
// ones saved with the model and used for the validation scores.
func TestRunLearnsAndSavesEstimatedBN(t *testing.T) {
	data := testShards(t)
	cfg := DefaultConfig()
	cfg.Data, cfg.Out = data, t.TempDir()
	cfg.Epochs, cfg.Batch, cfg.BNBatches, cfg.EvalRunning, cfg.BestBy = 4, 16, 2, true, "map"
	cfg.Augment.Enabled = false
	res, err := Run(context.Background(), cfg, quietLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	first, last := res.History[0], res.History[len(res.History)-1]
	if !(last.TrainLoss < first.TrainLoss) {
		t.Errorf("train loss did not fall: %g → %g", first.TrainLoss, last.TrainLoss)
	}
	if last.Running == nil {
		t.Fatal("no running-statistics scores although EvalRunning is set")
	}
	// The saved model's val scores are reproducible from the file alone.
	b, err := model.Load(res.ModelPath)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := store.Open(context.Background(), data)
	man, _ := shard.LoadManifest(context.Background(), st)
	val, err := eval.LoadSplit(context.Background(), st, man, "val", 0)
	if err != nil {
		t.Fatal(err)
	}
	probs, err := eval.Predict(context.Background(), b, val, 7)
	if err != nil {
		t.Fatal(err)
	}
	got := eval.Score(man.Labels, probs, val.Truth())
	want := res.History[res.Best-1].Val
	if math.Abs(got.Loss-want.Loss) > 1e-6 || math.Abs(got.MAP-want.MAP) > 1e-6 {
		t.Errorf("saved model scores %+v on val, the history says %+v", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Config)
	}{
		{"no data", func(c *Config) { c.Data = "" }},
		{"no epochs", func(c *Config) { c.Epochs = 0 }},
		{"batch 1", func(c *Config) { c.Batch = 1 }},
		{"bad best-by", func(c *Config) { c.BestBy = "f1" }},
		{"bad lr", func(c *Config) { c.Adam.LR = -1 }},
		{"bn batches", func(c *Config) { c.BNBatches = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Data = "x"
			tc.mut(&c)
			if err := c.Validate(); err == nil {
				t.Error("accepted")
			}
		})
	}
	c := DefaultConfig()
	c.Data = "x"
	if err := c.Validate(); err != nil {
		t.Errorf("default config refused: %v", err)
	}
}
