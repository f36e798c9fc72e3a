package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// reducer is an in-memory all-reduce for k workers: every call of a slot
// blocks until all k have made theirs, then each gets the total (summed in
// worker order, as the coordinator does).
type reducer struct {
	k     int
	mu    sync.Mutex
	cond  *sync.Cond
	slots map[int]*reduceSlot
	calls int
}

type reduceSlot struct {
	vals  [][]float64
	n     int
	total []float64
	read  int
}

func newReducer(k int) *reducer {
	r := &reducer{k: k, slots: map[int]*reduceSlot{}}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *reducer) hook(worker int) func(int, []float64) error {
	return func(slot int, vals []float64) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls++
		s := r.slots[slot]
		if s == nil {
			s = &reduceSlot{vals: make([][]float64, r.k)}
			r.slots[slot] = s
		}
		s.vals[worker] = append([]float64(nil), vals...)
		s.n++
		if s.n == r.k {
			s.total = make([]float64, len(vals))
			for _, v := range s.vals {
				for i, x := range v {
					s.total[i] += x
				}
			}
			r.cond.Broadcast()
		}
		for s.total == nil {
			r.cond.Wait()
		}
		copy(vals, s.total)
		if s.read++; s.read == r.k {
			delete(r.slots, slot)
		}
		return nil
	}
}

// Dropout in syncStep.
const (
	dropOff    = iota
	dropShared // one process's masks, each worker at its offset
	dropSkewed // every worker draws from offset 0
)

// syncStep trains k fresh workers on k parts of (x, y), with BNSync if
// synced and dropout as drop says, and compares their averaged gradient, mean loss and running
// statistics with one process training on the whole batch. It returns the
// largest gradient difference relative to its parameter's largest
// gradient, and the largest running-mean difference.
func syncStep(t *testing.T, synced bool, drop int) (gradDiff, statDiff float64) {
	const (
		k, per, labels = 3, 4, 5
		size           = 24
	)
	cfg := DefaultConfig(size, labels)
	cfg.Dense = 64
	one, err := New(cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	in, nl := cfg.InputLen(), labels
	x := make([]float32, k*per*in)
	y := make([]float32, k*per*nl)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for i := range y {
		if rng.IntN(3) == 0 {
			y[i] = 1
		}
	}
	base := StepOptions{BN: BNTrain, Dropout: drop != dropOff, Seed: 11, Step: 4}
	loss, g, err := one.TrainStep(x, y, k*per, base)
	if err != nil {
		t.Fatal(err)
	}
	want := cloneGrads(g)

	workers := make([]*Net, k)
	for i := range workers {
		if workers[i], err = New(cfg, 7); err != nil {
			t.Fatal(err)
		}
	}
	red := newReducer(k)
	losses := make([]float64, k)
	grads := make([][][]float32, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opt := base
			if drop == dropShared {
				opt.DropoutOffset = i * per
			}
			if synced {
				opt.BNSync = red.hook(i)
			}
			l, g, err := workers[i].TrainStep(x[i*per*in:(i+1)*per*in], y[i*per*nl:(i+1)*per*nl], per, opt)
			losses[i], grads[i], errs[i] = l, cloneGrads(g), err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
	}
	if synced {
		if want := 2 * len(one.BN()); red.calls != k*want {
			t.Errorf("%d reductions, want %d per worker", red.calls, want)
		}
		var mean float64
		for _, l := range losses {
			mean += l / k
		}
		if d := math.Abs(mean - loss); d > 1e-5*math.Abs(loss) && drop != dropSkewed {
			t.Errorf("mean loss %v, one process %v", mean, loss)
		}
	}
	for p := range want {
		var worst, scale float64
		for j, w := range want[p] {
			var avg float64
			for i := range grads {
				avg += float64(grads[i][p][j]) / k
			}
			worst = max(worst, math.Abs(avg-float64(w)))
			scale = max(scale, math.Abs(float64(w)))
		}
		gradDiff = max(gradDiff, worst/(scale+1e-12))
	}
	for l, st := range one.BN() {
		for _, w := range workers {
			got := w.BN()[l]
			for ch := range st.Mean {
				statDiff = max(statDiff, math.Abs(float64(got.Mean[ch]-st.Mean[ch])))
			}
		}
	}
	return gradDiff, statDiff
}

// Synchronised BatchNorm makes k workers training on k parts of a batch
// compute, averaged, the gradient one process computes on the whole batch,
// with the same loss and the same BatchNorm running statistics. Without
// it, each worker normalises its own part, and both differ.
func TestSyncBatchNormMatchesOneProcess(t *testing.T) {
	g, s := syncStep(t, true, dropOff)
	t.Logf("synchronised: gradients within %.2g, running means within %.2g", g, s)
	if g > 1e-4 || s > 1e-5 {
		t.Errorf("synchronised BatchNorm: gradients differ by %.3g (relative), running means by %.3g", g, s)
	}
	// with dropout, each worker drawing its slice of one process's masks
	dg, ds := syncStep(t, true, dropShared)
	t.Logf("synchronised, shared dropout masks: gradients within %.2g, running means within %.2g", dg, ds)
	if dg > 1e-4 || ds > 1e-5 {
		t.Errorf("shared dropout masks: gradients differ by %.3g (relative), running means by %.3g", dg, ds)
	}
	if sg, _ := syncStep(t, true, dropSkewed); sg < 100*max(dg, 1e-6) {
		t.Errorf("workers drawing the same masks match one process too closely (%.3g): the comparison cannot tell", sg)
	}
	ug, us := syncStep(t, false, dropOff)
	t.Logf("unsynchronised: gradients within %.2g, running means within %.2g", ug, us)
	if ug < 100*max(g, 1e-6) || us < 100*max(s, 1e-8) {
		t.Errorf("unsynchronised workers match one process too closely (%.3g, %.3g): the comparison cannot tell", ug, us)
	}
}

func cloneGrads(g [][]float32) [][]float32 {
	out := make([][]float32, len(g))
	for i := range g {
		out[i] = append([]float32(nil), g[i]...)
	}
	return out
}

// GradReady reports every parameter's gradient exactly once, during the
// backward pass (the last layer's first), and each is already final: equal
// to what TrainStep returns.
func TestGradReady(t *testing.T) {
	net, err := New(DefaultConfig(16, 5), 3)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 4
	rng := rand.New(rand.NewPCG(2, 2))
	x := randData(rng, batch*net.Config().InputLen(), 1)
	y := make([]float32, batch*5)
	for i := range y {
		y[i] = float32(rng.IntN(2))
	}
	var order []int
	copies := map[int][]float32{}
	opt := StepOptions{Dropout: true, Seed: 1, Step: 1, BN: BNTrain, GradReady: func(p int, g []float32) {
		order = append(order, p)
		copies[p] = append([]float32(nil), g...)
	}}
	_, grads, err := net.TrainStep(x, y, batch, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(order) != len(grads) || len(copies) != len(grads) {
		t.Fatalf("%d calls for %d distinct of %d parameters", len(order), len(copies), len(grads))
	}
	if order[0] < len(grads)/2 || order[len(order)-1] > len(grads)/2 {
		t.Errorf("gradients not reported in backward order: %v", order)
	}
	for p, g := range grads {
		if !slices.Equal(copies[p], g) {
			t.Errorf("parameter %d (%s): gradient changed after it was reported", p, net.Params()[p].Name)
		}
	}
}

// A BNSync that fails (the step was cancelled, the coordinator went away)
// fails the step with its own error, which errors.Is finds, and without
// the VM's trace of the op that called it; the next step runs.
func TestSyncBNErrorIsTheStepError(t *testing.T) {
	cfg := DefaultConfig(24, 5)
	cfg.Dense = 64
	net, err := New(cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 4*cfg.InputLen())
	y := make([]float32, 4*5)
	for i := range x {
		x[i] = float32(i%7) / 7
	}
	for _, slot := range []int{0, 3} { // a forward and a backward slot
		calls := 0
		opt := StepOptions{BN: BNTrain, BNSync: func(s int, vals []float64) error {
			calls++
			if s == slot {
				return fmt.Errorf("exchange: %w", context.Canceled)
			}
			return nil // one worker: its own sums are the totals
		}}
		_, _, err := net.TrainStep(x, y, 4, opt)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("slot %d fails: TrainStep error %v, want context.Canceled in it", slot, err)
		}
		if msg := err.Error(); strings.Contains(msg, "Failed to execute instruction") || strings.Contains(msg, "PC ") {
			t.Errorf("slot %d fails: error %q carries the VM's trace", slot, msg)
		}
		if want := fmt.Sprintf("train step: synchronised batchnorm slot %d: exchange: context canceled", slot); err.Error() != want {
			t.Errorf("slot %d fails: error %q, want %q", slot, err, want)
		}
	}
	if _, _, err := net.TrainStep(x, y, 4, StepOptions{BN: BNTrain, BNSync: func(int, []float64) error { return nil }}); err != nil {
		t.Errorf("the step after a failed one: %v", err)
	}
}
