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

// BenchmarkAdamDecayed is BenchmarkAdam with L2 and weight decay on every
// tensor.
func BenchmarkAdamDecayed(b *testing.B) {
	sizes := []int{3_276_800, 1_048_576, 147_456, 73_728, 36_864, 18_432, 15_360, 1024}
	var p, g [][]float32
	var ts []Tensor
	for _, n := range sizes {
		p = append(p, make([]float32, n))
		g = append(g, make([]float32, n))
		ts = append(ts, Tensor{Size: n, Kernel: true})
	}
	cfg := DefaultAdam(10)
	cfg.L2, cfg.WeightDecay = 1e-4, 0.01
	a, _ := NewAdamFor(cfg, ts)
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
		case key == "warmup" || key == "warmup_start":
			// derived by a cluster run from its learning-rate scaling
			if fl != nil {
				t.Errorf("--%s: a flag of its own, want none (job.Spec's --warmup-steps sets it)", name)
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

// refAdamReg is refAdam with, on a kernel, Keras' l2 kernel regulariser
// (the gradient gains 2·L2·w) and AdamW's decoupled decay (w loses
// lr_t·WeightDecay·w), both from the weight before the step, in float64,
// written from the definitions.
func refAdamReg(cfg AdamConfig, kernel bool, p, g []float64, steps int) []float64 {
	m := make([]float64, len(p))
	v := make([]float64, len(p))
	p = append([]float64(nil), p...)
	for it := 0; it < steps; it++ {
		lr := cfg.LR / (1 + cfg.Decay*float64(it))
		t := float64(it + 1)
		lrT := lr * math.Sqrt(1-math.Pow(cfg.Beta2, t)) / (1 - math.Pow(cfg.Beta1, t))
		for j := range p {
			w, gj := p[j], g[j]
			if kernel {
				gj += 2 * cfg.L2 * w
			}
			m[j] = cfg.Beta1*m[j] + (1-cfg.Beta1)*gj
			v[j] = cfg.Beta2*v[j] + (1-cfg.Beta2)*gj*gj
			p[j] = w - lrT*m[j]/(math.Sqrt(v[j])+cfg.Epsilon)
			if kernel {
				p[j] -= lr * cfg.WeightDecay * w
			}
		}
	}
	return p
}

// L2 and weight decay change the kernels as the float64 reference does,
// through the vector kernel and the scalar tail, and leave the other
// tensors exactly as Adam without them leaves them.
func TestAdamRegularisation(t *testing.T) {
	kp := []float64{0.5, -1, 2, 0, 0.25, -0.75, 1.5, 3, -2, 0.1, 1} // 8 vector, 3 scalar
	kg := []float64{0.1, -0.3, 0, 2, 0.05, 0, -0.2, 0.01, 0.3, -1, 0}
	bp := []float64{0.5, -1, 2}
	bg := []float64{0.1, 0, -0.2}
	f32 := func(x []float64) []float32 {
		out := make([]float32, len(x))
		for i, v := range x {
			out[i] = float32(v)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		cfg  AdamConfig
	}{
		{"l2", AdamConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7, L2: 0.1}},
		{"weight decay", AdamConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7, WeightDecay: 0.5}},
		{"both, lr decay", AdamConfig{LR: 0.01, Beta1: 0.8, Beta2: 0.99, Epsilon: 1e-7, Decay: 0.1, L2: 0.05, WeightDecay: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAdamFor(tc.cfg, []Tensor{{Size: len(kp), Kernel: true}, {Size: len(bp)}})
			if err != nil {
				t.Fatal(err)
			}
			plain := tc.cfg
			plain.L2, plain.WeightDecay = 0, 0
			b, _ := NewAdam(plain, []int{len(bp)})
			k, bias, bias2 := f32(kp), f32(bp), f32(bp)
			const steps = 10
			for range steps {
				if err := a.Update([][]float32{k, bias}, [][]float32{f32(kg), f32(bg)}); err != nil {
					t.Fatal(err)
				}
				_ = b.Update([][]float32{bias2}, [][]float32{f32(bg)})
			}
			want := refAdamReg(tc.cfg, true, kp, kg, steps)
			unreg := refAdamReg(tc.cfg, false, kp, kg, steps)
			moved := 0.0
			for j := range k {
				if math.Abs(float64(k[j])-want[j]) > 1e-6 {
					t.Errorf("kernel[%d] after %d steps: got %.8f, want %.8f (without regularisation %.8f)", j, steps, k[j], want[j], unreg[j])
				}
				moved = max(moved, math.Abs(want[j]-unreg[j]))
			}
			if moved < 1e-3 {
				t.Errorf("the regularisation moves the kernel by at most %g: the test cannot tell", moved)
			}
			for j := range bias {
				if math.Float32bits(bias[j]) != math.Float32bits(bias2[j]) {
					t.Errorf("bias[%d]: %v, without regularisation %v", j, bias[j], bias2[j])
				}
			}
		})
	}
}

// One step by hand. L2 0.01 on w = 2 with a zero gradient: the gradient
// is 2·0.01·2 = 0.04, so m = 0.1·0.04 = 0.004, √v = √0.001·0.04 =
// 0.00126491106, lr_t = 1e-3·√0.001/0.1 = 3.16227766e-4, and the step
// lr_t·m/(√v+ε) with ε 0.01 (large, so that the step depends on the
// gradient's size, not only its sign) is 0.000112287710. AdamW 0.1 on w =
// 2 with a zero gradient (no Adam step): w loses 1e-3·0.1·2 = 0.0002, then
// with lr decay 1, lr 5e-4, 1.9998·5e-5. A bias with a zero gradient does
// not move.
func TestAdamRegularisationByHand(t *testing.T) {
	cfg := AdamConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7}
	l2 := cfg
	l2.L2, l2.Epsilon = 0.01, 0.01
	a, _ := NewAdamFor(l2, []Tensor{{Size: 1, Kernel: true}, {Size: 1}})
	w, b := []float32{2}, []float32{2}
	_ = a.Update([][]float32{w, b}, [][]float32{{0}, {0}})
	if want := 2 - 0.000112287710; math.Abs(float64(w[0])-want) > 2e-7 || b[0] != 2 {
		t.Errorf("l2: kernel %.8f, bias %v; want %.8f, 2", w[0], b[0], want)
	}
	wd := cfg
	wd.WeightDecay, wd.Decay = 0.1, 1
	a, _ = NewAdamFor(wd, []Tensor{{Size: 1, Kernel: true}, {Size: 1}})
	w, b = []float32{2}, []float32{2}
	for _, want := range []float64{1.9998, 1.99970001} {
		_ = a.Update([][]float32{w, b}, [][]float32{{0}, {0}})
		if math.Abs(float64(w[0])-want) > 2e-7 || b[0] != 2 {
			t.Errorf("weight decay, step %d: kernel %.8f, bias %v; want %.8f, 2", a.Step(), w[0], b[0], want)
		}
	}
}

// With L2 and weight decay at 0 (the default), a kernel's update is Adam's,
// bit for bit; with them on, a kernel cut into parts anywhere (as the
// parameter servers cut a big tensor) gets the bits the whole tensor gets.
func TestAdamRegularisationBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	const n, cut = 70001, 12345
	p0, g := make([]float32, n), make([]float32, n)
	for i := range p0 {
		p0[i], g[i] = float32(rng.NormFloat64()*0.1), float32(rng.NormFloat64()*0.01)
	}
	cfg := DefaultAdam(5)
	plain, _ := NewAdam(cfg, []int{n})
	off, _ := NewAdamFor(cfg, []Tensor{{Size: n, Kernel: true}})
	p1, p2 := slices.Clone(p0), slices.Clone(p0)
	for range 3 {
		_ = plain.Update([][]float32{p1}, [][]float32{g})
		_ = off.Update([][]float32{p2}, [][]float32{g})
	}
	if !slices.Equal(p1, p2) {
		t.Error("a kernel with l2 and weight decay 0 is not updated as plain Adam")
	}
	cfg.L2, cfg.WeightDecay = 1e-3, 0.05
	whole, _ := NewAdamFor(cfg, []Tensor{{Size: n, Kernel: true}})
	parts, _ := NewAdamFor(cfg, []Tensor{{Size: cut, Kernel: true}, {Size: n - cut, Kernel: true}})
	p1, p2 = slices.Clone(p0), slices.Clone(p0)
	for range 3 {
		_ = whole.Update([][]float32{p1}, [][]float32{g})
		_ = parts.Update([][]float32{p2[:cut], p2[cut:]}, [][]float32{g[:cut], g[cut:]})
	}
	for i := range p1 {
		if math.Float32bits(p1[i]) != math.Float32bits(p2[i]) {
			t.Fatalf("[%d]: whole %v, in parts %v", i, p1[i], p2[i])
		}
	}
	if slices.Equal(p1, p0) {
		t.Error("nothing changed")
	}
}

func TestAdamRegularisationErrors(t *testing.T) {
	for _, c := range []AdamConfig{
		{L2: -1}, {L2: math.NaN()}, {L2: math.Inf(1)},
		{WeightDecay: -0.1}, {WeightDecay: math.NaN()}, {WeightDecay: 1000}, // lr·wd = 1
	} {
		cfg := DefaultAdam(0)
		cfg.L2, cfg.WeightDecay = c.L2, c.WeightDecay
		if err := cfg.Validate(); err == nil {
			t.Errorf("l2 %g, weight decay %g accepted", cfg.L2, cfg.WeightDecay)
		}
	}
	cfg := DefaultAdam(0)
	cfg.L2 = 1e-4
	if _, err := NewAdam(cfg, []int{3}); err == nil {
		t.Error("NewAdam with l2 (no tensor a kernel) accepted")
	}
}

// The warm-up ramps the rate linearly from WarmupStart·LR to LR over
// Warmup updates, on top of the time-based decay, and each update uses the
// rate LRAt gives for its index: an update's step on a parameter whose
// gradient has a constant sign is lr_t (Adam's m̂/√v̂ is then 1, up to ε).
func TestAdamWarmup(t *testing.T) {
	cfg := AdamConfig{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-12, Decay: 0.01, Warmup: 4, WarmupStart: 0.25}
	for _, tc := range []struct {
		t    int64
		want float64
	}{
		{0, 0.01 * 0.25},
		{1, 0.01 / 1.01 * (0.25 + 0.75*1/4)},
		{2, 0.01 / 1.02 * (0.25 + 0.75*2/4)},
		{4, 0.01 / 1.04},
		{100, 0.01 / 2},
	} {
		if got := cfg.LRAt(tc.t); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("LRAt(%d) = %g, want %g", tc.t, got, tc.want)
		}
	}
	a, err := NewAdam(cfg, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	p := []float32{0}
	prev := 0.0
	for step := int64(0); step < 6; step++ {
		if a.LR() != cfg.LRAt(step) {
			t.Fatalf("update %d: LR() %g, want %g", step, a.LR(), cfg.LRAt(step))
		}
		if err := a.Update([][]float32{p}, [][]float32{{1}}); err != nil {
			t.Fatal(err)
		}
		moved := prev - float64(p[0])
		prev = float64(p[0])
		if math.Abs(moved-cfg.LRAt(step))/cfg.LRAt(step) > 1e-4 {
			t.Errorf("update %d moved the weight by %g, want lr %g", step, moved, cfg.LRAt(step))
		}
	}
	for _, bad := range []AdamConfig{
		{LR: 1, Beta1: 0.9, Beta2: 0.9, Epsilon: 1e-7, Warmup: -1},
		{LR: 1, Beta1: 0.9, Beta2: 0.9, Epsilon: 1e-7, Warmup: 3},
		{LR: 1, Beta1: 0.9, Beta2: 0.9, Epsilon: 1e-7, Warmup: 3, WarmupStart: 1.5},
	} {
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "warm-up") {
			t.Errorf("%+v: %v, want a warm-up error", bad, err)
		}
	}
}

// UpdateScaled(f) is Update with the learning rate times f: at f = 1 the
// same bits, at f = 0.5 half the first step of a constant-sign gradient.
func TestAdamUpdateScaled(t *testing.T) {
	cfg := AdamConfig{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-12}
	a, _ := NewAdam(cfg, []int{3})
	b, _ := NewAdam(cfg, []int{3})
	pa, pb := []float32{1, -2, 3}, []float32{1, -2, 3}
	g := []float32{0.3, -0.1, 2}
	for range 3 {
		if err := a.Update([][]float32{pa}, [][]float32{g}); err != nil {
			t.Fatal(err)
		}
		if err := b.UpdateScaled([][]float32{pb}, [][]float32{g}, 1); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(pa, pb) {
		t.Errorf("f = 1: %v, Update gives %v", pb, pa)
	}
	c, _ := NewAdam(cfg, []int{1})
	p := []float32{0}
	if err := c.UpdateScaled([][]float32{p}, [][]float32{{1}}, 0.5); err != nil {
		t.Fatal(err)
	}
	if got := -float64(p[0]); math.Abs(got-0.005)/0.005 > 1e-4 {
		t.Errorf("f = 0.5 moved the weight by %g, want 0.005", got)
	}
}
