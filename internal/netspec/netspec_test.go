package netspec

import (
	"testing"

	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
)

// The kernels are the conv filters and the dense weight matrices, in the
// net and in the spec the parameter servers get: not the biases, not
// BatchNorm's γ and β, not its statistics.
func TestKernels(t *testing.T) {
	n, err := model.New(model.DefaultConfig(32, 7), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"conv1/w": true, "conv2/w": true, "conv3/w": true, "conv4/w": true, "conv5/w": true, "dense1/w": true, "out/w": true}
	for _, p := range n.Params() {
		if p.Kernel != want[p.Name] {
			t.Errorf("param %s: kernel %v, want %v", p.Name, p.Kernel, want[p.Name])
		}
	}
	spec, _ := Tensors(n)
	kernels := 0
	for _, ts := range spec {
		if ts.Kernel != want[ts.Name] {
			t.Errorf("tensor %s: kernel %v, want %v", ts.Name, ts.Kernel, want[ts.Name])
		}
		if ts.Kernel {
			kernels++
		}
	}
	if kernels != len(want) {
		t.Errorf("%d kernels in the spec, want %d", kernels, len(want))
	}
}

func TestTensorsMatchModelFile(t *testing.T) {
	cfg := model.DefaultConfig(32, 7)
	n, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	spec, data := Tensors(n)
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := spec.Total(), cfg.NumParams(true); got != want {
		t.Errorf("spec has %d floats, the architecture %d", got, want)
	}
	params := 0
	for i, ts := range spec {
		if len(data[i]) != ts.Size {
			t.Errorf("%s: %d values, spec says %d", ts.Name, len(data[i]), ts.Size)
		}
		p := TensorParam(n, i)
		if (ts.Kind == wire.Param) != (p >= 0) {
			t.Errorf("tensor %d (%s): kind %v, param %d", i, ts.Name, ts.Kind, p)
		}
		if ts.Kind == wire.Param {
			// the last layer's first: the order backprop finishes them
			if want := n.Params()[len(n.Params())-1-params]; ts.Name != want.Name || &data[i][0] != &want.Data[0] {
				t.Errorf("tensor %d is %s, want %s", i, ts.Name, want.Name)
			}
			if ParamTensor(n, p) != i {
				t.Errorf("param %d: tensor %d, want %d", p, ParamTensor(n, p), i)
			}
			params++
		}
	}
	if params != len(n.Params()) {
		t.Errorf("%d params in the spec, %d in the net", params, len(n.Params()))
	}
	s2, err := Spec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := wire.NewPlan(spec, 2)
	p2, _ := wire.NewPlan(s2, 2)
	if p1.Fingerprint() != p2.Fingerprint() {
		t.Error("Spec and Tensors disagree")
	}
	grads := make([][]float32, len(n.Params()))
	for i, p := range n.Params() {
		grads[i] = make([]float32, len(p.Data))
	}
	push := Push(n, grads)
	if len(push) != len(spec) {
		t.Fatalf("push has %d tensors, spec %d", len(push), len(spec))
	}
	for i := range push {
		if len(push[i]) != spec[i].Size {
			t.Errorf("push tensor %d: %d values, spec %d", i, len(push[i]), spec[i].Size)
		}
		if p := TensorParam(n, i); p >= 0 && &push[i][0] != &grads[p][0] {
			t.Errorf("push tensor %d is not the gradient of param %d", i, p)
		}
	}
}
