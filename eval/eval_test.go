package eval

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tailorml/tailor/eval/tensorboard"
	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// testSplits composes a toy data set from the committed Fashion-MNIST subset,
// ingests it and loads its train and val splits.
func testSplits(t *testing.T) (*shard.Manifest, *Dataset, *Dataset) {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	fc := fashion.DefaultConfig()
	fc.Source, fc.Out = "../fashion/testdata", filepath.Join(dir, "images")
	fc.Size, fc.Train, fc.Val, fc.Test = 24, 48, 24, 8
	if _, err := fashion.Generate(ctx, fc, quiet); err != nil {
		t.Fatal(err)
	}
	bc := shard.DefaultBuildConfig()
	bc.Size = 24
	st, err := store.NewLocal(filepath.Join(dir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shard.Build(ctx, bc, fc.Out, st, nil, quiet); err != nil {
		t.Fatal(err)
	}
	man, err := shard.LoadManifest(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	train, err := LoadSplit(ctx, st, man, shard.SplitTrain, 0)
	if err != nil {
		t.Fatal(err)
	}
	val, err := LoadSplit(ctx, st, man, shard.SplitVal, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(val.Records) != 20 {
		t.Fatalf("LoadSplit with max 20 kept %d records", len(val.Records))
	}
	return man, train, val
}

func TestBCE(t *testing.T) {
	if got := BCE([]float32{1, 0}, []bool{true, false}); got > 1e-6 {
		t.Errorf("perfect predictions: BCE %g", got)
	}
	if got := BCE([]float32{0}, []bool{true}); math.IsInf(got, 0) || got < 15 {
		t.Errorf("confidently wrong: BCE %g, want large and finite", got)
	}
}

// At the end of an epoch the validator scores the net with re-estimated
// BatchNorm statistics, saves a model that scores exactly that, writes the
// history and leaves the net's running statistics as they were.
func TestValidatorEndEpoch(t *testing.T) {
	ctx := context.Background()
	man, train, val := testSplits(t)
	net, err := model.New(model.DefaultConfig(man.Width, len(man.Labels)), 3)
	if err != nil {
		t.Fatal(err)
	}
	before := snapshotBN(net)
	mean, std := man.Normalization()
	out := t.TempDir()
	events, err := tensorboard.Create(filepath.Join(out, "tensorboard"))
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	v := &Validator{Cfg: ValidatorConfig{Out: out, BNEstimate: true, BNBatches: 2, Batch: 8, EvalBatch: 7, EvalRunning: true, BestBy: "loss", Seed: 3,
		Meta: map[string]string{"data": "test"}}, Labels: man.Labels, Mean: mean, Std: std, Train: train, Val: val, Events: events}

	ep, improved, err := v.EndEpoch(ctx, net, Epoch{Epoch: 1, TrainLoss: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	if !improved || v.Best != 1 || len(v.History) != 1 || !v.History[0].Val.Equal(ep.Val) || !v.History[0].Running.Equal(*ep.Running) {
		t.Errorf("first epoch: improved %v, best %d, history %+v; want saved as the best, one row", improved, v.Best, v.History)
	}
	if ep.Running == nil {
		t.Fatal("no running-statistics scores although EvalRunning is set")
	}
	if ep.Running.Equal(ep.Val) {
		t.Errorf("running and re-estimated statistics score the same (%+v): was BatchNorm re-estimated?", ep.Val)
	}
	if !reflect.DeepEqual(snapshotBN(net), before) {
		t.Error("the net's running BatchNorm statistics changed")
	}

	b, err := model.Load(v.ModelPath())
	if err != nil {
		t.Fatal(err)
	}
	if b.Meta["data"] != "test" || b.Meta["epoch"] != "1" {
		t.Errorf("saved model's meta %v, want data=test and epoch=1", b.Meta)
	}
	probs, err := Predict(ctx, b, val, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := Score(man.Labels, probs, val.Truth()); math.Abs(got.Loss-ep.Val.Loss) > 1e-6 || math.Abs(got.MAP-ep.Val.MAP) > 1e-6 {
		t.Errorf("saved model scores %+v on val, the validator says %+v", got, ep.Val)
	}

	csv, err := os.ReadFile(filepath.Join(out, "history.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(csv)), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "1,0.900000,") {
		t.Errorf("history.csv:\n%s\nwant a header and the row of epoch 1", csv)
	}
	if _, err := os.Stat(filepath.Join(out, "history.png")); err != nil {
		t.Error(err)
	}

	// the event file has the epoch's scalars, as Epoch.Scalars names them
	evs, err := tensorboard.ReadFile(events.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[1].Step != 1 {
		t.Fatalf("events %+v: want the file version and epoch 1's scalars", evs)
	}
	got := map[string]float64{}
	for _, s := range evs[1].Scalars {
		got[s.Tag] = s.Value
	}
	want := map[string]float64{"train/loss": 0.9, "val/loss": ep.Val.Loss, "val/mAP": ep.Val.MAP, "val_running_bn/mAP": ep.Running.MAP}
	for i, l := range man.Labels {
		if !math.IsNaN(ep.Val.AP[i]) {
			want["val/AP/"+l] = ep.Val.AP[i]
		}
	}
	for tag, w := range want {
		if g, ok := got[tag]; !ok || g != float64(float32(w)) {
			t.Errorf("scalar %s = %v (present %v), want %v", tag, g, ok, float32(w))
		}
	}
	if _, ok := got["train/lr"]; ok {
		t.Error("train/lr written for an epoch without a learning rate")
	}

	// a resumed validator continues with the same history and best score
	st := v.State()
	w := &Validator{Cfg: v.Cfg}
	w.SetState(st)
	if !reflect.DeepEqual(w.State(), st) {
		t.Errorf("SetState then State: %+v, want %+v", w.State(), st)
	}
}

// Checkpoint manifests store ValidatorState as JSON: its keys are part of the
// checkpoint format (checkpoint/FORMAT.md) and must not change.
func TestValidatorStateJSON(t *testing.T) {
	s := ValidatorState{History: []Epoch{{Epoch: 1, TrainLoss: 0.5, Val: Scores{Loss: 0.4, MAP: 0.6}, Running: &Scores{Loss: 0.45}}}, Best: 1, BestScore: 0.4, HaveBest: true}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"history":[{"Epoch":1,"TrainLoss":0.5,"Val":{"Loss":0.4,"MAP":0.6,"MacroF1":0,"SubsetAcc":0},"Running":{"Loss":0.45,"MAP":0,"MacroF1":0,"SubsetAcc":0},"LR":0,"Seconds":0,"ImgPerSec":0}],"best":1,"best_score":0.4,"have_best":true}`
	if string(b) != want {
		t.Errorf("ValidatorState as JSON:\n%s\nwant\n%s", b, want)
	}
	var back ValidatorState
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, s) {
		t.Errorf("round trip: %+v (%v), want %+v", back, err, s)
	}
}
