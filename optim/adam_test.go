package optim

import (
	"encoding/json"
	"flag"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// A reference implementation in float64, written from Keras 2's
// optimizers.Adam.get_updates.
func refAdam(cfg AdamConfig, p, g []float64, steps int) []float64 {
	m := make([]float64, len(p))
	v := make([]float64, len(p))
	p = append([]float64(nil), p...)
	for it := 0; it < steps; it++ {
		lr := cfg.LR * (1 / (1 + cfg.Decay*float64(it)))
		t := float64(it + 1)
		lrT := lr * math.Sqrt(1-math.Pow(cfg.Beta2, t)) / (1 - math.Pow(cfg.Beta1, t))
		for j := range p {
			m[j] = cfg.Beta1*m[j] + (1-cfg.Beta1)*g[j]
			v[j] = cfg.Beta2*v[j] + (1-cfg.Beta2)*g[j]*g[j]
			p[j] -= lrT * m[j] / (math.Sqrt(v[j]) + cfg.Epsilon)
		}
	}
	return p
}

func TestAdamMatchesKeras(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  AdamConfig
	}{
		{"no decay", DefaultAdam(0)},
		{"tutorial decay", DefaultAdam(75)},
		{"big decay", AdamConfig{LR: 0.01, Beta1: 0.8, Beta2: 0.99, Epsilon: 1e-7, Decay: 0.1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := []float32{0.5, -1, 2, 0}
			g := []float32{0.1, -0.3, 0, 2}
			a, err := NewAdam(tc.cfg, []int{len(p)})
			if err != nil {
				t.Fatal(err)
			}
			const steps = 10
			for i := 0; i < steps; i++ {
				if err := a.Update([][]float32{p}, [][]float32{g}); err != nil {
					t.Fatal(err)
				}
			}
			want := refAdam(tc.cfg, []float64{0.5, -1, 2, 0}, []float64{0.1, -0.3, 0, 2}, steps)
			for j := range p {
				if math.Abs(float64(p[j])-want[j]) > 1e-6 {
					t.Errorf("param %d after %d steps: got %.8f, want %.8f", j, steps, p[j], want[j])
				}
			}
			if a.Step() != steps {
				t.Errorf("step %d, want %d", a.Step(), steps)
			}
		})
	}
}

func TestAdamErrors(t *testing.T) {
	if _, err := NewAdam(AdamConfig{}, []int{1}); err == nil {
		t.Error("zero config accepted")
	}
	a, _ := NewAdam(DefaultAdam(1), []int{2})
	if err := a.Update([][]float32{{1}}, [][]float32{{1}}); err == nil {
		t.Error("wrong tensor size accepted")
	}
	if err := a.Update([][]float32{{1, 2}, {3}}, [][]float32{{1, 2}}); err == nil {
		t.Error("wrong tensor count accepted")
	}
}

func TestAdamKernels(t *testing.T) {
	a, err := NewAdam(DefaultAdam(1), []int{2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Kernels(); !slices.Equal(got, []bool{false, false}) {
		t.Errorf("NewAdam: kernels %v, want none", got)
	}
	b, err := NewAdamFor(DefaultAdam(1), []Tensor{{Size: 2, Kernel: true}, {Size: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Kernels(); !slices.Equal(got, []bool{true, false}) {
		t.Errorf("NewAdamFor: kernels %v, want [true false]", got)
	}
	if err := b.Update([][]float32{{1, 2}, {3, 4, 5}}, [][]float32{{1, 1}, {1, 1, 1}}); err != nil {
		t.Error(err)
	}
}

func TestAdamRestore(t *testing.T) {
	cfg := DefaultAdam(10)
	a, _ := NewAdam(cfg, []int{3})
	p := []float32{1, 2, 3}
	g := []float32{0.5, -0.5, 1}
	for i := 0; i < 3; i++ {
		_ = a.Update([][]float32{p}, [][]float32{g})
	}
	step, m, v := a.State()
	b, _ := NewAdam(cfg, []int{3})
	if err := b.Restore(step, m, v); err != nil {
		t.Fatal(err)
	}
	q := append([]float32(nil), p...)
	_ = a.Update([][]float32{p}, [][]float32{g})
	_ = b.Update([][]float32{q}, [][]float32{g})
	for i := range p {
		if p[i] != q[i] {
			t.Errorf("restored optimizer diverged at %d: %v vs %v", i, p[i], q[i])
		}
	}
}

func BenchmarkAdam(b *testing.B) {
	sizes := []int{3_276_800, 1_048_576, 147_456, 73_728, 36_864, 18_432, 15_360, 1024}
	var p, g [][]float32
	for _, n := range sizes {
		p = append(p, make([]float32, n))
		g = append(g, make([]float32, n))
	}
	a, _ := NewAdam(DefaultAdam(10), sizes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = a.Update(p, g)
	}
}

// The vector kernel computes what the scalar loop computes, bit for bit,
// for every length (tails included) and for large and tiny values.
func TestAdamVecMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 2))
	c := &adamConsts{0.9, 1 - float32(0.9), 0.999, 1 - float32(0.999), 1.3e-3, 1e-7}
	for _, n := range []int{0, 1, 7, 8, 9, 31, 64, 1000, 4099} {
		mk := func(scale float64) []float32 {
			d := make([]float32, n)
			for i := range d {
				d[i] = float32(rng.NormFloat64() * scale * math.Pow(10, float64(rng.IntN(9)-4)))
			}
			return d
		}
		p, m, g := mk(1), mk(0.1), mk(1)
		v := mk(0.1)
		for i := range v {
			v[i] = v[i] * v[i]
		}
		p2, m2, v2 := slices.Clone(p), slices.Clone(m), slices.Clone(v)
		adamScalar(p2, m2, v2, g, c)
		done := adamVec(p, m, v, g, c)
		adamScalar(p[done:], m[done:], v[done:], g[done:], c)
		for i := range p {
			if math.Float32bits(p[i]) != math.Float32bits(p2[i]) || m[i] != m2[i] || v[i] != v2[i] {
				t.Fatalf("n %d, element %d: vector p %g m %g v %g, scalar p %g m %g v %g", n, i, p[i], m[i], v[i], p2[i], m2[i], v2[i])
			}
		}
		if n >= 8 && done == 0 && hasVec {
			t.Fatalf("n %d: the vector kernel did not run", n)
		}
	}
}

// Every hyperparameter but Decay (which a run derives from its length) is
// a flag named after its JSON key, with the configuration's value as its
// default; Settings adds --decay.
func TestAdamFlags(t *testing.T) {
	s := DefaultSettings()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s.AddFlags(fs)
	rt := reflect.TypeOf(AdamConfig{})
	for i := range rt.NumField() {
		key, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		name := strings.ReplaceAll(key, "_", "-")
		fl := fs.Lookup(name)
		switch {
		case key == "decay":
			if fl == nil || fl.DefValue != "true" {
				t.Errorf("--decay: got %+v, want the DecayAuto switch, default true", fl)
			}
		case fl == nil:
			t.Errorf("AdamConfig.%s (json %q) has no flag --%s", rt.Field(i).Name, key, name)
		default:
			want := reflect.ValueOf(s.Adam).Field(i).Interface()
			if fl.Value.(flag.Getter).Get() != want {
				t.Errorf("--%s defaults to %s, want %v", name, fl.DefValue, want)
			}
		}
	}
	if err := fs.Parse([]string{"--lr", "0.01", "--beta1", "0.8", "--beta2", "0.99", "--epsilon", "1e-8", "--decay=false"}); err != nil {
		t.Fatal(err)
	}
	want := Settings{Adam: AdamConfig{LR: 0.01, Beta1: 0.8, Beta2: 0.99, Epsilon: 1e-8}}
	if s != want {
		t.Errorf("parsed %+v, want %+v", s, want)
	}
}

func TestSettingsFor(t *testing.T) {
	s := DefaultSettings()
	if got := s.For(10).Decay; got != 1e-4 {
		t.Errorf("auto decay over 10 epochs: %g, want 1e-4", got)
	}
	if got := s.For(0).Decay; got != 0 {
		t.Errorf("auto decay over 0 epochs: %g, want 0", got)
	}
	s.Adam.Decay = -1 // ignored with DecayAuto
	if err := s.For(10).Validate(); err != nil {
		t.Errorf("auto decay: %v", err)
	}
	s.DecayAuto = false
	if got := s.For(10).Decay; got != -1 {
		t.Errorf("no auto decay: %g, want the given -1", got)
	}
	// the spec's keys: "adam" and "decay_auto", Adam's own keys unchanged
	b, _ := json.Marshal(DefaultSettings())
	if want := `{"adam":{"lr":0.001,"beta1":0.9,"beta2":0.999,"epsilon":1e-7,"decay":0},"decay_auto":true}`; string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
}
