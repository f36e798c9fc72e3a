package model

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const torchPython = "/usr/bin/python3"

// requireTorch skips, saying why, when Debian's python3-torch is missing.
// .ci/run installs it, so CI always runs the parity tests.
func requireTorch(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(torchPython); err != nil {
		t.Skipf("parity with PyTorch needs %s with python3-torch: %v", torchPython, err)
	}
	if out, err := exec.Command(torchPython, "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("parity with PyTorch needs python3-torch (apt-get install python3-torch): %v: %s", err, strings.TrimSpace(string(out)))
	}
}

func writeF32(t *testing.T, path string, d []float32) {
	t.Helper()
	b := make([]byte, 4*len(d))
	for i, v := range d {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := make([]float32, len(b)/4)
	for i := range d {
		d[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return d
}

// TestParityWithPyTorch runs inference (running BatchNorm statistics) and one
// training step (train-mode BatchNorm, dropout off) on identical weights and
// batch in tailor and in PyTorch, and compares the probabilities, the loss,
// every gradient and the updated BatchNorm running statistics.
func TestParityWithPyTorch(t *testing.T) {
	requireTorch(t)
	const size, labels, batch = 32, 7, 8
	net, err := New(DefaultConfig(size, labels), 42)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	// Non-trivial BatchNorm parameters and statistics, so every term matters.
	for _, p := range net.Params() {
		if strings.HasPrefix(p.Name, "bn") || strings.HasSuffix(p.Name, "/b") {
			for i := range p.Data {
				if strings.HasSuffix(p.Name, "gamma") {
					p.Data[i] = float32(0.5 + rng.Float64())
				} else {
					p.Data[i] = float32(0.2 * rng.NormFloat64())
				}
			}
		}
	}
	for _, st := range net.BN() {
		for i := range st.Mean {
			st.Mean[i] = float32(0.1 * rng.NormFloat64())
			st.Variance[i] = float32(0.5 + rng.Float64())
		}
	}
	x := randData(rng, batch*net.Config().InputLen(), 1)
	y := make([]float32, batch*labels)
	for i := range y {
		if rng.Float64() < 0.3 {
			y[i] = 1
		}
	}

	dir := t.TempDir()
	meta := map[string]any{"size": size, "labels": labels, "dense": net.Config().Dense, "channels": 3}
	shapes := map[string][]int{}
	put := func(name string, shape []int, d []float32) {
		shapes[name] = shape
		writeF32(t, filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".f32"), d)
	}
	for _, p := range net.Params() {
		put(p.Name, p.Shape, p.Data)
	}
	for _, st := range net.BN() {
		put(st.Name+"/mean", []int{len(st.Mean)}, st.Mean)
		put(st.Name+"/var", []int{len(st.Variance)}, st.Variance)
	}
	put("x", []int{batch, 3, size, size}, x)
	put("y", []int{batch, labels}, y)
	meta["shapes"] = shapes
	mb, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), mb, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(torchPython, "testdata/torch_parity.py", dir)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("torch_parity.py: %v\n%s", err, out)
	}

	// inference first: the training step changes the running statistics
	probs := make([]float32, batch*labels)
	if err := net.Predict(x, batch, probs); err != nil {
		t.Fatal(err)
	}
	loss, grads, err := net.TrainStep(x, y, batch, StepOptions{BN: BNTrain})
	if err != nil {
		t.Fatal(err)
	}
	var ref struct{ Loss float64 }
	rb, err := os.ReadFile(filepath.Join(dir, "out.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(rb, &ref); err != nil {
		t.Fatal(err)
	}
	if rel := math.Abs(loss-ref.Loss) / math.Abs(ref.Loss); rel > 1e-5 {
		t.Errorf("loss: tailor %.9g, pytorch %.9g, relative difference %.2e, want ≤ 1e-5", loss, ref.Loss, rel)
	} else {
		t.Logf("loss: tailor %.9g, pytorch %.9g, relative difference %.2e", loss, ref.Loss, rel)
	}
	compare := func(name string, got []float32, tol float64) {
		want := readF32(t, filepath.Join(dir, "out_"+strings.ReplaceAll(name, "/", "_")+".f32"))
		if len(want) != len(got) {
			t.Errorf("%s: %d values, pytorch has %d", name, len(got), len(want))
			return
		}
		var maxDiff, maxRef float64
		for i := range got {
			maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-float64(want[i])))
			maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
		}
		rel := maxDiff / math.Max(maxRef, 1e-30)
		if rel > tol {
			t.Errorf("%s: max |Δ| / max |ref| = %.2e, want ≤ %.0e", name, rel, tol)
		} else {
			t.Logf("%s: max |Δ| / max |ref| = %.2e", name, rel)
		}
	}
	compare("probs", probs, 1e-5)
	for i, p := range net.Params() {
		compare(p.Name, grads[i], 1e-3)
	}
	for _, st := range net.BN() {
		compare(st.Name+"/mean", st.Mean, 1e-5)
		compare(st.Name+"/var", st.Variance, 1e-5)
	}
}
