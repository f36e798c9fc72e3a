package onnxexport_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/onnxexport"
)

const python = "/usr/bin/python3"

// evalScript checks and runs an exported model with the onnx package and
// PyTorch (see its doc string).
var evalScript, _ = filepath.Abs(filepath.Join("testdata", "onnx_eval.py"))

// requireONNXTools skips, saying why, when python3, python3-onnx or
// python3-torch is missing. `scripts/setup.sh --test` installs them, so CI
// runs the test.
func requireONNXTools(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Skipf("checking the ONNX export needs %s with python3-onnx and python3-torch: %v", python, err)
	}
	for _, mod := range []string{"onnx", "torch", "numpy"} {
		if out, err := exec.Command(python, "-c", "import "+mod).CombinedOutput(); err != nil {
			t.Skipf("checking the ONNX export needs python3-%s (scripts/setup.sh --test installs it): %v: %s", mod, err, strings.TrimSpace(string(out)))
		}
	}
}

// runEval runs onnx_eval.py on model with n images of raw HWC pixels and
// returns its probabilities, or its error output.
func runEval(t *testing.T, modelPath string, pixels []byte, n int) ([]float32, string, error) {
	t.Helper()
	dir := t.TempDir()
	pix, out := filepath.Join(dir, "pixels.u8"), filepath.Join(dir, "probs.f32")
	if err := os.WriteFile(pix, pixels, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, evalScript, modelPath, out, "--pixels", pix, strconv.Itoa(n))
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	stdout, err := cmd.Output()
	if err != nil {
		msg := string(stdout)
		if ee, ok := err.(*exec.ExitError); ok {
			msg += string(ee.Stderr)
		}
		return nil, msg, err
	}
	return readF32(t, out), string(stdout), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
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

func maxAbsDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// TestONNXMatchesNet exports a net and has tools tailor did not write run
// it: onnx.checker (full check, with shape inference) must accept the
// file, and an interpreter of the graph in PyTorch, preparing 32 images of
// raw pixels from the metadata alone, must give the probabilities tailor's
// own forward pass gives on the same pixels (input.Normalize, Net.Predict)
// within 1e-4. Spoilt copies of the graph and of its metadata must fail
// that comparison: the check sees what the file says, not what it should.
func TestONNXMatchesNet(t *testing.T) {
	requireONNXTools(t)
	const labels, n = 7, 32
	fixtures := map[int]*fixture{}
	at := func(size int) *fixture {
		if fixtures[size] == nil {
			fixtures[size] = newFixture(t, size, labels, n)
		}
		return fixtures[size]
	}
	node := func(m *onnx.ModelProto, name string) *onnx.NodeProto {
		for _, nd := range m.Graph.Node {
			if nd.Name == name {
				return nd
			}
		}
		t.Fatalf("no node %s", name)
		return nil
	}
	tests := []struct {
		name  string
		size  int
		spoil func(m *onnx.ModelProto)
		match bool
	}{
		{"as exported, 32 px", 32, func(*onnx.ModelProto) {}, true},
		{"as exported, 64 px", 64, func(*onnx.ModelProto) {}, true},
		{"BatchNorm before ReLU in block 3", 32, func(m *onnx.ModelProto) {
			conv, relu, bn := node(m, "block3_conv"), node(m, "block3_relu"), node(m, "block3_bn")
			node(m, "block3_pool").Input[0] = relu.Output[0]
			relu.Input[0], bn.Input[0] = bn.Output[0], conv.Output[0]
			// keep the node list in order of computation
			nodes := m.Graph.Node
			i, j := slices.Index(nodes, relu), slices.Index(nodes, bn)
			nodes[i], nodes[j] = nodes[j], nodes[i]
		}, false},
		{"2×2 pooling after block 1", 32, func(m *onnx.ModelProto) {
			for _, a := range node(m, "block1_pool").Attribute {
				if a.Name == "kernel_shape" || a.Name == "strides" {
					a.Ints = []int64{2, 2}
				}
			}
		}, false},
		{"dense BatchNorm means in reverse order", 32, func(m *onnx.ModelProto) {
			for _, in := range m.Graph.Initializer {
				if in.Name == "bn6_mean" {
					raw := in.RawData
					for i, j := 0, len(raw)-4; i < j; i, j = i+4, j-4 {
						for k := range 4 {
							raw[i+k], raw[j+k] = raw[j+k], raw[i+k]
						}
					}
				}
			}
		}, false},
		{"input mean of the channels in BGR order", 32, func(m *onnx.ModelProto) {
			for _, p := range m.MetadataProps {
				if p.Key == onnxexport.KeyMean {
					p.Value = "[0.37,0.42,0.49]"
				}
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := at(tt.size)
			m := proto.Clone(f.good).(*onnx.ModelProto)
			tt.spoil(m)
			data, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "m.onnx")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, out, err := runEval(t, path, f.pixels, n)
			if err != nil && !tt.match {
				t.Logf("refused: %v: %s", err, lastLine(out))
				return
			}
			if err != nil {
				t.Fatalf("onnx_eval.py: %v\n%s", err, out)
			}
			if len(got) != len(f.want) {
				t.Fatalf("onnx_eval.py gave %d probabilities, want %d", len(got), len(f.want))
			}
			d := maxAbsDiff(got, f.want)
			switch {
			case tt.match && d > 1e-4:
				t.Errorf("max |ONNX − tailor| = %.3g over %d images × %d labels at %d px, want ≤ 1e-4", d, n, labels, tt.size)
			case !tt.match && d < 1e-3:
				t.Errorf("max |ONNX − tailor| = %.3g: the spoilt file still matches, so the check does not see it", d)
			default:
				t.Logf("max |ONNX − tailor| = %.3g (%s)", d, strings.TrimSpace(out))
			}
		})
	}
}

// fixture is an exported net, n images of random pixels and tailor's
// probabilities for them.
type fixture struct {
	pixels []byte
	want   []float32
	good   *onnx.ModelProto
}

func newFixture(t *testing.T, size, labels, n int) *fixture {
	t.Helper()
	b := testBundle(t, size, labels, 5)
	cfg := b.Net.Config()
	rng := rand.New(rand.NewPCG(11, uint64(size)))
	f := &fixture{pixels: make([]byte, n*size*size*3), want: make([]float32, n*labels)}
	for i := range f.pixels {
		f.pixels[i] = byte(rng.IntN(256))
	}
	x := make([]float32, n*cfg.InputLen())
	for i := range n {
		input.Normalize(x[i*cfg.InputLen():], f.pixels[i*size*size*3:], size, size, 3, b.Mean, b.Std)
	}
	if err := b.Net.Predict(x, n, f.want); err != nil {
		t.Fatal(err)
	}
	mid := 0
	for _, p := range f.want {
		if p > 0.02 && p < 0.98 {
			mid++
		}
	}
	if mid < len(f.want)/2 {
		t.Fatalf("only %d of %d probabilities are within (0.02, 0.98) at %d px: too saturated to compare", mid, len(f.want), size)
	}
	var err error
	if f.good, err = onnxexport.Model(b, onnxexport.Options{ProducerVersion: "test"}); err != nil {
		t.Fatal(err)
	}
	return f
}
