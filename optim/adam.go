// Package optim holds the optimizers. It works on plain named float32 tensors,
// so the single-process trainer and the parameter server (which knows nothing
// of the net) apply exactly the same update.
package optim

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// AdamConfig is Adam as in Keras 2 (the tutorial's optimizer), including its
// time-based learning-rate decay: lr_t = LR / (1 + Decay·t).
//
// This is the one place an optimizer hyperparameter is declared: its field
// (with its JSON key in the run's spec), its default (DefaultAdam), its
// check (Validate), its flag (AddFlags) and its arithmetic (Update).
// train.Config and job.Spec hold it (through Settings); the parameter
// servers of a cluster run take it from the spec in etcd (job.Spec's
// AdamConfig); every command that configures an optimizer registers its
// flags with AddFlags, so the config file, the TAILOR_* variables and
// `tailor config show` know a new field without an entry of their own. A
// new field should be tagged omitempty with a zero value that changes
// nothing, so that the spec of a run submitted before it existed reads
// (and compares, on resubmission) the same.
type AdamConfig struct {
	LR      float64 `json:"lr"`
	Beta1   float64 `json:"beta1"`
	Beta2   float64 `json:"beta2"`
	Epsilon float64 `json:"epsilon"`
	Decay   float64 `json:"decay"` // per step; the tutorial uses LR/epochs
	// L2 is Keras' kernel_regularizer=l2(L2) on every kernel (Tensor.Kernel:
	// conv filters and dense weight matrices; not biases, not BatchNorm's γ
	// and β): the loss gains L2·Σw² over the kernels, so each kernel's
	// gradient gains 2·L2·w (w the weights the gradient was taken at, i.e.
	// before this update). The term is added to the gradient before the
	// moments, so Adam scales it like the gradient, by 1/(√v̂+ε). The
	// losses tailor reports (training, validation, best-by loss) are the
	// cross-entropy without the penalty, where Keras' "loss" includes it.
	// 0: off.
	L2 float64 `json:"l2,omitempty"`
	// WeightDecay is AdamW's decoupled weight decay (Loshchilov & Hutter,
	// "Decoupled Weight Decay Regularization") on every kernel (as L2):
	// w ← w − lr_t·wd·w − Adam's step, w the weights before the update
	// (PyTorch's AdamW order: the decay first, from the same w). lr_t is
	// the learning rate after Keras 2's time-based decay, LR/(1+Decay·t)
	// (t the updates applied so far), so the weight decay follows the
	// learning-rate schedule as the paper's η_t has it; it is not
	// multiplied by Adam's bias correction √(1−β2^t)/(1−β1^t), which only
	// the gradient step has, and it never touches the moments. LR·
	// WeightDecay must be below 1. 0: off.
	WeightDecay float64 `json:"weight_decay,omitempty"`
	// Warmup is the number of updates over which the learning rate ramps
	// linearly from WarmupStart·LR up to LR (Goyal et al. 2017's gradual
	// warm-up, for a learning rate scaled up with the batch): update t
	// uses (WarmupStart + (1−WarmupStart)·t/Warmup)·LR, before decay.
	// 0: none.
	Warmup int `json:"warmup,omitempty"`
	// WarmupStart is the fraction of LR the first update uses, in (0, 1]
	// (with Warmup > 0).
	WarmupStart float64 `json:"warmup_start,omitempty"`
}

// LRAt is the learning rate of update t (counted from 0): LR after the
// warm-up's ramp and Keras 2's time-based decay, LR/(1+Decay·t), before
// Adam's bias correction.
func (c AdamConfig) LRAt(t int64) float64 {
	lr := c.LR / (1 + c.Decay*float64(t))
	if c.Warmup > 0 && t < int64(c.Warmup) {
		lr *= c.WarmupStart + (1-c.WarmupStart)*float64(t)/float64(c.Warmup)
	}
	return lr
}

// DefaultAdam is the tutorial's setting for a run of epochs epochs.
func DefaultAdam(epochs int) AdamConfig {
	c := AdamConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-7}
	if epochs > 0 {
		c.Decay = c.LR / float64(epochs)
	}
	return c
}

// AddFlags binds the hyperparameters to flags of fs, with c's values as
// the defaults. All but Decay, which a run derives from its length
// (Settings) or a standalone parameter server from --decay-epochs, and the
// warm-up, which a cluster run derives from its learning-rate scaling
// (job.Spec.AdamConfig).
func (c *AdamConfig) AddFlags(fs *flag.FlagSet) {
	fs.Float64Var(&c.LR, "lr", c.LR, "Adam learning rate")
	fs.Float64Var(&c.Beta1, "beta1", c.Beta1, "Adam's decay rate of the gradient's moving average (β1)")
	fs.Float64Var(&c.Beta2, "beta2", c.Beta2, "Adam's decay rate of the squared gradient's moving average (β2)")
	fs.Float64Var(&c.Epsilon, "epsilon", c.Epsilon, "Adam's ε, added to √v (Keras 2's placement)")
	fs.Float64Var(&c.L2, "l2", c.L2, "L2 penalty λ on the conv and dense kernels, as Keras' kernel_regularizer=l2(λ): their gradient gains 2λw (0: off)")
	fs.Float64Var(&c.WeightDecay, "weight-decay", c.WeightDecay, "AdamW's decoupled weight decay on the conv and dense kernels: w -= lr·wd·w each step, lr as decayed by --decay (0: off)")
}

// Settings are a run's optimizer: Adam's hyperparameters and whether the
// learning rate decays over the run's length. train.Config and job.Spec
// embed them, so `tailor train` and a cluster run read the same fields from
// the same flags (AddFlags); in the spec's JSON they are the top-level keys
// "adam" and "decay_auto".
type Settings struct {
	Adam AdamConfig `json:"adam"` // its Decay is ignored with DecayAuto
	// DecayAuto sets Adam's decay to LR/epochs, as the tutorial does.
	DecayAuto bool `json:"decay_auto"`
}

// DefaultSettings are the tutorial's: DefaultAdam with its decay over the
// run's epochs.
func DefaultSettings() Settings { return Settings{Adam: DefaultAdam(0), DecayAuto: true} }

// AddFlags binds the settings to flags of fs: Adam's (AdamConfig.AddFlags)
// and --decay.
func (s *Settings) AddFlags(fs *flag.FlagSet) {
	s.Adam.AddFlags(fs)
	fs.BoolVar(&s.DecayAuto, "decay", s.DecayAuto, "decay the learning rate as lr/(1+lr/epochs·step) (the tutorial's)")
}

// For is the optimizer of a run of epochs epochs: Adam with its decay
// resolved (LR/epochs with DecayAuto; 0 if epochs < 1, which the run
// reports as an error of its own).
func (s Settings) For(epochs int) AdamConfig {
	a := s.Adam
	if s.DecayAuto {
		a.Decay = 0
		if epochs > 0 {
			a.Decay = a.LR / float64(epochs)
		}
	}
	return a
}

// Validate reports whether the configuration makes sense.
func (c AdamConfig) Validate() error {
	var errs []error
	if !(c.LR > 0) {
		errs = append(errs, fmt.Errorf("learning rate %g: want > 0", c.LR))
	}
	if c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1 {
		errs = append(errs, fmt.Errorf("betas %g, %g: want [0, 1)", c.Beta1, c.Beta2))
	}
	if !(c.Epsilon > 0) {
		errs = append(errs, fmt.Errorf("epsilon %g: want > 0", c.Epsilon))
	}
	if c.Decay < 0 {
		errs = append(errs, fmt.Errorf("decay %g: want ≥ 0", c.Decay))
	}
	if !(c.L2 >= 0) || math.IsInf(c.L2, 0) {
		errs = append(errs, fmt.Errorf("l2 %g: want ≥ 0", c.L2))
	}
	if !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 0) {
		errs = append(errs, fmt.Errorf("weight decay %g: want ≥ 0", c.WeightDecay))
	} else if c.LR*c.WeightDecay >= 1 {
		errs = append(errs, fmt.Errorf("weight decay %g with learning rate %g: want lr·wd below 1", c.WeightDecay, c.LR))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warm-up %d updates: want ≥ 0", c.Warmup))
	} else if c.Warmup > 0 && !(c.WarmupStart > 0 && c.WarmupStart <= 1) {
		errs = append(errs, fmt.Errorf("warm-up start %g: want (0, 1]", c.WarmupStart))
	}
	return errors.Join(errs...)
}

// Tensor is one tensor the optimizer updates (or a contiguous part of one:
// the update is elementwise).
type Tensor struct {
	Size int // floats
	// Kernel marks a layer's kernel (conv filters, a dense weight matrix)
	// as opposed to a bias or a normalisation parameter (BatchNorm's γ and
	// β): the tensors weight decay applies to, as Keras'
	// kernel_regularizer. The net marks its kernels (model.Param.Kernel);
	// the parameter servers read the mark from their tensor spec
	// (wire.Tensor.Kernel).
	Kernel bool
}

// Adam holds the moments of a set of tensors and updates them in place.
type Adam struct {
	cfg    AdamConfig
	step   int64
	m, v   [][]float32
	kernel []bool // per tensor: Tensor.Kernel
}

// NewAdam makes an optimizer for tensors of the given sizes, none of them a
// kernel (see NewAdamFor): with L2 or WeightDecay, which would do nothing,
// it is an error.
func NewAdam(cfg AdamConfig, sizes []int) (*Adam, error) {
	if cfg.L2 != 0 || cfg.WeightDecay != 0 {
		return nil, errors.New("adam: l2 and weight decay apply to kernels: say which tensors are (NewAdamFor)")
	}
	ts := make([]Tensor, len(sizes))
	for i, n := range sizes {
		ts[i].Size = n
	}
	return NewAdamFor(cfg, ts)
}

// NewAdamFor makes an optimizer for the given tensors, in the order Update
// takes them.
func NewAdamFor(cfg AdamConfig, tensors []Tensor) (*Adam, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("adam: %w", err)
	}
	a := &Adam{cfg: cfg}
	for _, t := range tensors {
		a.m = append(a.m, make([]float32, t.Size))
		a.v = append(a.v, make([]float32, t.Size))
		a.kernel = append(a.kernel, t.Kernel)
	}
	return a, nil
}

// Kernels reports, per tensor, whether it is a kernel.
func (a *Adam) Kernels() []bool { return slices.Clone(a.kernel) }

// Step is the number of updates applied so far.
func (a *Adam) Step() int64 { return a.step }

// LR is the learning rate of the next update (after decay, before bias
// correction).
func (a *Adam) LR() float64 { return a.cfg.LRAt(a.step) }

// Update applies one step: params[i] -= lr_t · m̂/(√v̂ + ε), with on kernels
// the L2 term in the gradient and the decoupled weight decay (see
// AdamConfig). grads align with params and are not modified.
func (a *Adam) Update(params, grads [][]float32) error {
	return a.UpdateScaled(params, grads, 1)
}

// UpdateScaled is Update with this step's learning rate (and its decoupled
// weight decay) multiplied by f: a sync step of fewer workers than the
// run's learning rate was scaled for (job.Spec.StepLRFactor).
func (a *Adam) UpdateScaled(params, grads [][]float32, f float64) error {
	if len(params) != len(a.m) || len(grads) != len(a.m) {
		return fmt.Errorf("adam: got %d params and %d grads, want %d", len(params), len(grads), len(a.m))
	}
	for i := range params {
		if len(params[i]) != len(a.m[i]) || len(grads[i]) != len(a.m[i]) {
			return fmt.Errorf("adam: tensor %d has %d params and %d grads, want %d", i, len(params[i]), len(grads[i]), len(a.m[i]))
		}
	}
	lr := a.LR() * f
	a.step++
	t := float64(a.step)
	lrT := lr * math.Sqrt(1-math.Pow(a.cfg.Beta2, t)) / (1 - math.Pow(a.cfg.Beta1, t))
	b1, b2 := float32(a.cfg.Beta1), float32(a.cfg.Beta2)
	eps, step := float32(a.cfg.Epsilon), float32(lrT)
	// Elementwise, so any split gives the same result: chunks run on all cores.
	type chunk struct{ t, lo, hi int }
	var chunks []chunk
	for i, p := range params {
		for lo := 0; lo < len(p); lo += adamChunk {
			chunks = append(chunks, chunk{i, lo, min(lo+adamChunk, len(p))})
		}
	}
	consts := &adamConsts{b1, 1 - b1, b2, 1 - b2, step, eps}
	reg := regConsts{l2x2: float32(2 * a.cfg.L2), wd: float32(lr * a.cfg.WeightDecay)}
	parallel(len(chunks), func(k int) {
		c := chunks[k]
		p, m, v, g := params[c.t][c.lo:c.hi], a.m[c.t][c.lo:c.hi], a.v[c.t][c.lo:c.hi], grads[c.t][c.lo:c.hi]
		m, v, g = m[:len(p)], v[:len(p)], g[:len(p)]
		if a.kernel[c.t] && reg != (regConsts{}) {
			adamDecayed(p, m, v, g, consts, reg)
			return
		}
		done := adamVec(p, m, v, g, consts)
		adamScalar(p[done:], m[done:], v[done:], g[done:], consts)
	})
	return nil
}

// adamConsts are one step's constants, as the vector kernel reads them.
type adamConsts struct{ b1, omb1, b2, omb2, step, eps float32 }

// regConsts are one step's regularisation constants for kernels: 2·L2, and
// lr_t·WeightDecay.
type regConsts struct{ l2x2, wd float32 }

// adamDecayed is the update of a kernel with regularisation, in blocks:
// for each float, the gradient g + 2·L2·w and the decayed weight
// w − lr_t·wd·w, both from the weight before the update, then Adam's step
// on them (the vector kernel or the scalar loop, as for any tensor). The
// products are converted to float32 before the sums, which keeps the
// compiler from fusing them into a multiply-add.
func adamDecayed(p, m, v, g []float32, c *adamConsts, r regConsts) {
	var buf [1024]float32
	for lo := 0; lo < len(p); lo += len(buf) {
		hi := min(lo+len(buf), len(p))
		pb, mb, vb, gb := p[lo:hi], m[lo:hi], v[lo:hi], g[lo:hi]
		gb = gb[:len(pb)]
		switch {
		case r.l2x2 != 0 && r.wd != 0:
			b := buf[:len(pb)]
			for j, w := range pb {
				b[j] = gb[j] + float32(r.l2x2*w)
				pb[j] = w - float32(r.wd*w)
			}
			gb = b
		case r.l2x2 != 0:
			b := buf[:len(pb)]
			for j, w := range pb {
				b[j] = gb[j] + float32(r.l2x2*w)
			}
			gb = b
		default:
			for j, w := range pb {
				pb[j] = w - float32(r.wd*w)
			}
		}
		done := adamVec(pb, mb, vb, gb, c)
		adamScalar(pb[done:], mb[done:], vb[done:], gb[done:], c)
	}
}

// Kernel names the loop Update runs, as chosen at start from the CPU's
// features: "avx" (adamAVX, eight floats at a time) or "go" (the scalar
// loop: another architecture, the purego build tag, or a CPU without AVX).
// Both compute the same bits.
func Kernel() string {
	if hasVec {
		return "avx"
	}
	return "go"
}

// adamScalar is the update, one float at a time.
func adamScalar(p, m, v, g []float32, c *adamConsts) {
	m, v, g = m[:len(p)], v[:len(p)], g[:len(p)]
	for j := range p {
		gj := g[j]
		mj := c.b1*m[j] + c.omb1*gj
		vj := c.b2*v[j] + c.omb2*gj*gj
		m[j], v[j] = mj, vj
		p[j] -= c.step * mj / (float32(math.Sqrt(float64(vj))) + c.eps)
	}
}

const adamChunk = 1 << 16

// parallel runs fn(0..n-1) on GOMAXPROCS goroutines.
func parallel(n int, fn func(int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// State returns the optimizer's state for a checkpoint: the step and the
// moments (aliased, not copied).
func (a *Adam) State() (step int64, m, v [][]float32) { return a.step, a.m, a.v }

// Restore sets the state from a checkpoint.
func (a *Adam) Restore(step int64, m, v [][]float32) error {
	if len(m) != len(a.m) || len(v) != len(a.v) {
		return fmt.Errorf("adam restore: %d/%d moment tensors, want %d", len(m), len(v), len(a.m))
	}
	for i := range m {
		if len(m[i]) != len(a.m[i]) || len(v[i]) != len(a.v[i]) {
			return fmt.Errorf("adam restore: tensor %d has the wrong size", i)
		}
		copy(a.m[i], m[i])
		copy(a.v[i], v[i])
	}
	a.step = step
	return nil
}
