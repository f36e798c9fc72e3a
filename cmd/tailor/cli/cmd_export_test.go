package cli_test

import (
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/tailorml/tailor/cmd/tailor/cli"
	"github.com/tailorml/tailor/model"
)

// onnxEval is the exporter's independent check: onnx.checker, then the
// graph interpreted with PyTorch (onnxexport/testdata/onnx_eval.py).
const onnxEval = "../../../onnxexport/testdata/onnx_eval.py"

// TestExportONNX trains a small model through the command line, exports
// it with `tailor export --format onnx`, and runs the file with tools
// tailor did not write: onnx.checker (full check) must accept it, and the
// graph interpreted in PyTorch, on 32 test images decoded by PIL and
// prepared from the file's metadata only, must give the probabilities
// `tailor predict --format json` prints, within 1e-4. Without python3,
// python3-onnx or python3-torch that last part is skipped, saying why.
func TestExportONNX(t *testing.T) {
	dir := t.TempDir()
	images, shards, out := filepath.Join(dir, "images"), filepath.Join(dir, "shards"), filepath.Join(dir, "run")
	run(t, 0, "data", "fashion", "--source", fashionTestdata, "--size", "24", "--train", "64", "--val", "32", "--test", "32", images)
	run(t, 0, "shard", "build", images, shards, "--size", "24")
	run(t, 0, "train", "--data", shards, "--out", out, "--epochs", "1", "--batch", "16", "--bn-batches", "2")
	modelPath, onnxPath := filepath.Join(out, "model.tailor"), filepath.Join(dir, "model.onnx")

	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"export", "--format", "tflite", modelPath, onnxPath}, 2, `--format "tflite": want onnx`},
		{[]string{"export", modelPath}, 2, "want MODEL and OUT"},
		{[]string{"export", filepath.Join(dir, "absent.tailor"), onnxPath}, 1, "no such file"},
	} {
		_, stderr := run(t, tt.code, tt.args...)
		if !strings.Contains(stderr, tt.want) {
			t.Errorf("tailor %s: stderr %q, want %q", strings.Join(tt.args, " "), stderr, tt.want)
		}
	}
	if _, err := os.Stat(onnxPath); !os.IsNotExist(err) {
		t.Fatalf("a refused export left %s: %v", onnxPath, err)
	}

	stdout, _ := run(t, 0, "export", "--format", "onnx", modelPath, onnxPath)
	if !strings.Contains(stdout, "wrote "+onnxPath+": ONNX opset 13") || !strings.Contains(stdout, "images [batch, 3, 24, 24]") {
		t.Errorf("export printed %q", stdout)
	}
	b, err := model.Load(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(onnxPath)
	if err != nil {
		t.Fatal(err)
	}
	var m onnx.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode %s: %v", onnxPath, err)
	}
	meta := map[string]string{}
	for _, p := range m.MetadataProps {
		meta[p.Key] = p.Value
	}
	var labels []string
	if err := json.Unmarshal([]byte(meta["labels"]), &labels); err != nil || !slices.Equal(labels, b.Labels) {
		t.Errorf("labels metadata %q (%v), want %v", meta["labels"], err, b.Labels)
	}
	if meta["tailor.epoch"] != b.Meta["epoch"] || meta["resize_interpolation"] != b.Meta["interpolation"] || m.ProducerName != "tailor" || m.ProducerVersion == "" {
		t.Errorf("provenance: epoch %q interpolation %q producer %q %q; model says epoch %q interpolation %q",
			meta["tailor.epoch"], meta["resize_interpolation"], m.ProducerName, m.ProducerVersion, b.Meta["epoch"], b.Meta["interpolation"])
	}

	var imgs []string
	_ = filepath.WalkDir(filepath.Join(images, "test"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".png") {
			imgs = append(imgs, p)
		}
		return nil
	})
	if len(imgs) != 32 {
		t.Fatalf("%d test images, want 32", len(imgs))
	}
	pj, _ := run(t, 0, append([]string{"predict", "--format", "json", modelPath}, imgs...)...)
	var preds []cli.Prediction
	if err := json.Unmarshal([]byte(pj), &preds); err != nil || len(preds) != len(imgs) {
		t.Fatalf("predict --format json: %d predictions (%v)", len(preds), err)
	}

	// --top and --format csv / table on the same images agree with the JSON
	csvOut, _ := run(t, 0, "predict", "--format", "csv", "--top", "3", modelPath, imgs[0], imgs[1])
	rows, err := csv.NewReader(strings.NewReader(csvOut)).ReadAll()
	if err != nil || len(rows) != 1+2*3 {
		t.Fatalf("predict --format csv --top 3 on 2 images: %d rows (%v), want a header and 6:\n%s", len(rows), err, csvOut)
	}
	for r, row := range rows[1:] {
		i, k := r/3, r%3
		l := preds[i].Labels[k]
		if want := []string{imgs[i], strconv.Itoa(k + 1), l.Label, strconv.FormatFloat(l.Probability, 'g', -1, 32),
			strconv.FormatFloat(l.Threshold, 'g', -1, 32), strconv.FormatBool(l.Present), ""}; !slices.Equal(row, want) {
			t.Errorf("csv row %d: %q, want %q", r+1, row, want)
		}
	}
	table, _ := run(t, 0, "predict", "--top", "2", modelPath, imgs[0])
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 3 || lines[0] != imgs[0] || !strings.Contains(lines[1], preds[0].Labels[0].Label+":") {
		t.Errorf("predict --top 2 printed:\n%s", table)
	}

	if skip := onnxToolsMissing(); skip != "" {
		t.Skip(skip)
	}
	probs := filepath.Join(dir, "onnx_probs.f32")
	cmd := exec.Command("/usr/bin/python3", append([]string{onnxEval, onnxPath, probs, "--images"}, imgs...)...)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("onnx_eval.py: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(probs)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 4*len(imgs)*len(labels) {
		t.Fatalf("onnx_eval.py wrote %d bytes, want %d", len(raw), 4*len(imgs)*len(labels))
	}
	var maxDiff float64
	for i, p := range preds {
		if p.Image != imgs[i] || len(p.Labels) != len(labels) {
			t.Fatalf("prediction %d: %s with %d labels, want %s with %d", i, p.Image, len(p.Labels), imgs[i], len(labels))
		}
		for _, l := range p.Labels {
			j := slices.Index(labels, l.Label)
			got := float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(i*len(labels)+j):])))
			maxDiff = math.Max(maxDiff, math.Abs(got-l.Probability))
		}
	}
	if maxDiff > 1e-4 {
		t.Errorf("max |ONNX − tailor predict| = %.3g over %d images × %d labels, want ≤ 1e-4", maxDiff, len(imgs), len(labels))
	} else {
		t.Logf("max |ONNX − tailor predict| = %.3g over %d images × %d labels", maxDiff, len(imgs), len(labels))
	}
}

// onnxToolsMissing says why the ONNX file cannot be checked here, or "".
// scripts/setup.sh --test installs what it needs, so CI checks it.
func onnxToolsMissing() string {
	for _, mod := range []string{"onnx", "torch", "numpy", "PIL"} {
		if out, err := exec.Command("/usr/bin/python3", "-c", "import "+mod).CombinedOutput(); err != nil {
			return "checking the ONNX export needs /usr/bin/python3 with python3-onnx, python3-torch and python3-pil (scripts/setup.sh --test installs them): import " +
				mod + ": " + err.Error() + ": " + strings.TrimSpace(string(out))
		}
	}
	return ""
}

// TestExportPredictHelp: --help names the flags and what they print.
func TestExportPredictHelp(t *testing.T) {
	for _, tt := range []struct {
		cmd  string
		want []string
	}{
		{"export", []string{"Usage: tailor export [flags] MODEL OUT", "-format format", "output format: onnx", "metadata_props", "opset 13"}},
		{"predict", []string{"Usage: tailor predict [flags] MODEL IMAGE...", "-format format", "table, json or csv", "-top K", "--top K keeps the K most probable"}},
	} {
		stdout, _ := run(t, 0, tt.cmd, "--help")
		for _, w := range tt.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("tailor %s --help lacks %q:\n%s", tt.cmd, w, stdout)
			}
		}
	}
	stdout, _ := run(t, 0, "--help")
	if !strings.Contains(stdout, "export") || !strings.Contains(stdout, "ONNX") {
		t.Errorf("tailor --help does not list export:\n%s", stdout)
	}
}
