package netspec

import (
	"testing"

	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
)

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
		if ts.Kind == wire.Param {
			if ts.Name != n.Params()[params].Name {
				t.Errorf("param %d is %s, model has %s", params, ts.Name, n.Params()[params].Name)
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
	}
}
