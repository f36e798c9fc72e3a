package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tailorml/tailor/cmd/tailor/cli"
	"github.com/tailorml/tailor/eval/tensorboard"
	"github.com/tailorml/tailor/eval/tensorboard/tbtest"
	"github.com/tailorml/tailor/metrics"
	tmodel "github.com/tailorml/tailor/model"
)

func run(t *testing.T, wantCode int, args ...string) (string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := cli.RunContext(context.Background(), args, &stdout, &stderr)
	if code != wantCode {
		t.Fatalf("tailor %s: exit code %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String()
}

// TestPipeline runs what the README's demo runs, at toy size: compose a data
// set from the committed Fashion-MNIST subset, ingest it, train, evaluate and
// predict, through the command line.
func TestPipeline(t *testing.T) {
	dir := t.TempDir()
	images, shards, out := filepath.Join(dir, "images"), filepath.Join(dir, "shards"), filepath.Join(dir, "run")
	run(t, 0, "data", "fashion", "--source", fashionTestdata, "--size", "24", "--train", "96", "--val", "32", "--test", "32", images)
	run(t, 0, "shard", "build", images, shards, "--size", "24", "--resize", "pad") // flags may follow the arguments
	stdout, _ := run(t, 0, "train", "--data", shards, "--out", out, "--epochs", "2", "--batch", "16", "--bn-batches", "2", "--eval-running-bn")
	for _, want := range []string{"kept the model of epoch", "test split", "mAP", "subset accuracy"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("train output lacks %q:\n%s", want, stdout)
		}
	}
	for _, f := range []string{"model.tailor", "history.csv", "history.png", "test_metrics.json"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("train did not write %s: %v", f, err)
		}
	}
	hist, err := os.ReadFile(filepath.Join(out, "history.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(hist)), "\n"); len(lines) != 3 {
		t.Errorf("history has %d lines, want a header and 2 epochs:\n%s", len(lines), hist)
	}
	checkEventFile(t, filepath.Join(out, "tensorboard"), string(hist))

	model := filepath.Join(out, "model.tailor")
	// The model keeps the build's resize mode, so that predict prepares
	// images as the training images were.
	if b, err := tmodel.Load(model); err != nil {
		t.Errorf("load the model: %v", err)
	} else if b.Meta["resize"] != "pad" || b.Meta["interpolation"] != "catmullrom" {
		t.Errorf("model meta %v, want resize pad and interpolation catmullrom", b.Meta)
	}
	js, _ := run(t, 0, "eval", "--model", model, "--data", shards, "--json")
	var rep metrics.Report
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("eval --json: %v\n%s", err, js)
	}
	if rep.Samples != 32 || len(rep.Labels) == 0 || rep.MAP <= 0 || rep.MAP > 1 {
		t.Errorf("eval report: %d samples, %d labels, mAP %g", rep.Samples, len(rep.Labels), rep.MAP)
	}
	table, _ := run(t, 0, "eval", "--model", model, "--data", shards, "--split", "val")
	if !strings.Contains(table, "hamming loss") {
		t.Errorf("eval table lacks the summary:\n%s", table)
	}

	var img string
	_ = filepath.WalkDir(filepath.Join(images, "test"), func(p string, d os.DirEntry, err error) error {
		if err == nil && img == "" && strings.HasSuffix(p, ".png") {
			img = p
		}
		return nil
	})
	pj, _ := run(t, 0, "predict", "--json", model, img)
	var preds []cli.Prediction
	if err := json.Unmarshal([]byte(pj), &preds); err != nil {
		t.Fatalf("predict --json: %v\n%s", err, pj)
	}
	if len(preds) != 1 || len(preds[0].Labels) != len(rep.Labels) {
		t.Fatalf("predict: %+v", preds)
	}
	for i, l := range preds[0].Labels {
		if l.Probability < 0 || l.Probability > 1 || (i > 0 && l.Probability > preds[0].Labels[i-1].Probability) {
			t.Errorf("label %d: probability %g out of range or order", i, l.Probability)
		}
		if l.Present != (l.Probability >= l.Threshold) {
			t.Errorf("label %s: present=%v at p=%g, threshold %g", l.Label, l.Present, l.Probability, l.Threshold)
		}
	}
	// flags anywhere: predict MODEL --json IMAGE prints the same
	if pj2, _ := run(t, 0, "predict", model, "--json", img); pj2 != pj {
		t.Errorf("predict MODEL --json IMAGE:\n%s\nwant what predict --json MODEL IMAGE printed:\n%s", pj2, pj)
	}
	text, _ := run(t, 0, "predict", model, img)
	if !strings.Contains(text, "%") {
		t.Errorf("predict text: %s", text)
	}
	// A file that is not an image is reported, not a crash; exit code 1.
	notImage := filepath.Join(dir, "notes.txt")
	_ = os.WriteFile(notImage, []byte("hello"), 0o644)
	text, stderr := run(t, 1, "predict", model, img, notImage)
	if !strings.Contains(text, "error:") || !strings.Contains(stderr, "1 of 2 images") {
		t.Errorf("predict on a text file: stdout %q stderr %q", text, stderr)
	}
	// A model file with a flipped byte is refused with a clear error.
	data, _ := os.ReadFile(model)
	data[len(data)/2] ^= 1
	bad := filepath.Join(dir, "bad.tailor")
	_ = os.WriteFile(bad, data, 0o644)
	_, stderr = run(t, 1, "predict", bad, img)
	if !strings.Contains(stderr, "checksum") {
		t.Errorf("corrupt model: %s", stderr)
	}
}

func TestHelp(t *testing.T) {
	for _, c := range []string{"train", "eval", "predict", "bench", "shard", "data"} {
		stdout, _ := run(t, 0, c, "--help")
		if !strings.Contains(stdout, "Usage") && !strings.Contains(stdout, "usage") {
			t.Errorf("tailor %s --help printed no usage:\n%s", c, stdout)
		}
	}
	stdout, _ := run(t, 0, "--help")
	for _, c := range []string{"train", "eval", "predict", "bench", "shard", "data"} {
		if !strings.Contains(stdout, c) {
			t.Errorf("tailor --help does not list %s", c)
		}
	}
}

// checkEventFile reads the one event file train wrote in dir, with the Go
// reader and (subtest "python", skipped without protoc and python3-protobuf)
// with TensorBoard's own protos, and compares its scalars with history.csv.
func checkEventFile(t *testing.T, dir, history string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, tensorboard.Prefix+"*"))
	if err != nil || len(files) != 1 {
		t.Fatalf("event files in %s: %v (%v), want one", dir, files, err)
	}
	rows := strings.Split(strings.TrimSpace(history), "\n")[1:]
	check := func(t *testing.T, evs []tensorboard.Event) {
		t.Helper()
		if len(evs) != 1+len(rows) || evs[0].FileVersion != tensorboard.FileVersion {
			t.Fatalf("%d events (first %+v), want the file version and one per epoch", len(evs), evs[0])
		}
		for i, row := range rows {
			// epoch,train_loss,val_loss,val_map,...,lr,seconds,img_per_s
			f := strings.Split(row, ",")
			ev := evs[1+i]
			got := map[string]float64{}
			for _, s := range ev.Scalars {
				got[s.Tag] = s.Value
			}
			if fmt.Sprint(ev.Step) != f[0] {
				t.Errorf("event %d: step %d, want epoch %s", 1+i, ev.Step, f[0])
			}
			for tag, col := range map[string]int{"train/loss": 1, "val/loss": 2, "val/mAP": 3, "train/lr": 8} {
				want, _ := strconv.ParseFloat(f[col], 64)
				if g, ok := got[tag]; !ok || math.Abs(g-want) > 1e-5*math.Max(1, math.Abs(want)) {
					t.Errorf("epoch %s: %s = %v (present %v), history.csv has %v", f[0], tag, g, ok, want)
				}
			}
			aps := 0
			for tag := range got {
				if strings.HasPrefix(tag, "val/AP/") {
					aps++
				}
			}
			if aps == 0 {
				t.Errorf("epoch %s: no per-label AP among %v", f[0], ev.Scalars)
			}
		}
	}
	evs, err := tensorboard.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	check(t, evs)
	t.Run("python", func(t *testing.T) { check(t, tbtest.ReadWithPython(t, files[0])) })
}
