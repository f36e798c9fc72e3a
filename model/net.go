// Package model is the net: SmallerVGGNet (the Keras tutorial's multi-label
// classifier) as a gorgonia graph of custom ops, its loss, its parameters and
// its file format. It knows nothing of shards, workers or clusters: it takes
// float32 NCHW batches and label vectors, and returns losses, gradients and
// probabilities.
package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Config is the architecture. The zero value is not valid; start from
// DefaultConfig.
type Config struct {
	Size     int        // input height and width, pixels
	Channels int        // input channels (3: RGB)
	Labels   int        // output units, one sigmoid per label
	Dropout  [4]float64 // after block 1, 2, 3 and the dense layer
	Dense    int        // hidden dense units
	BNEps    float64    // BatchNorm epsilon (Keras: 1e-3)
	BNMoment float64    // BatchNorm momentum, Keras convention (0.99)
}

// DefaultConfig is the Keras SmallerVGGNet for size×size RGB images.
func DefaultConfig(size, labels int) Config {
	return Config{
		Size: size, Channels: 3, Labels: labels,
		Dropout:  [4]float64{0.25, 0.25, 0.25, 0.5},
		Dense:    1024,
		BNEps:    1e-3,
		BNMoment: 0.99,
	}
}

// Validate reports whether the architecture can be built.
func (c Config) Validate() error {
	var errs []error
	if c.Size < 12 || c.Size > 1024 {
		errs = append(errs, fmt.Errorf("size %d: want 12 (three poolings) to 1024 pixels", c.Size))
	}
	if c.Channels < 1 || c.Channels > 16 {
		errs = append(errs, fmt.Errorf("channels %d: want 1 to 16", c.Channels))
	}
	if c.Labels < 1 || c.Labels > 1<<16 {
		errs = append(errs, fmt.Errorf("labels %d: want 1 to 65536", c.Labels))
	}
	for i, p := range c.Dropout {
		if p < 0 || p >= 1 {
			errs = append(errs, fmt.Errorf("dropout %d is %g: want [0, 1)", i+1, p))
		}
	}
	if c.Dense < 1 || c.Dense > 1<<16 {
		errs = append(errs, fmt.Errorf("dense units %d: want 1 to 65536", c.Dense))
	}
	if c.BNEps <= 0 {
		errs = append(errs, fmt.Errorf("batchnorm epsilon %g: want > 0", c.BNEps))
	}
	if c.BNMoment < 0 || c.BNMoment >= 1 {
		errs = append(errs, fmt.Errorf("batchnorm momentum %g: want [0, 1)", c.BNMoment))
	}
	return errors.Join(errs...)
}

// FinalSide is the side of the last feature map: size → /3 → /2 → /2.
func (c Config) FinalSide() int { return ((c.Size / 3) / 2) / 2 }

// NumParams is the number of trainable scalars of the architecture, plus
// the BatchNorm running statistics (2 per channel) when withBN is set.
func (c Config) NumParams(withBN bool) int {
	t, in, bnc := 0, c.Channels, 0
	for _, o := range convOut {
		t += o*in*9 + o + 2*o
		bnc += o
		in = o
	}
	flat := in * c.FinalSide() * c.FinalSide()
	t += flat*c.Dense + c.Dense + 2*c.Dense + c.Dense*c.Labels + c.Labels
	bnc += c.Dense
	if withBN {
		t += 2 * bnc
	}
	return t
}

// InputLen is the number of floats of one input image.
func (c Config) InputLen() int { return c.Channels * c.Size * c.Size }

// Param is one trainable tensor, stored row-major.
type Param struct {
	Name  string
	Shape []int
	Data  []float32
	// Kernel marks a layer's kernel, as Keras calls it: a conv layer's
	// filters or a dense layer's weight matrix, not a bias nor BatchNorm's
	// γ and β. Weight decay applies to kernels only (optim.Tensor); New
	// marks them, and the trainer and the parameter servers' tensor spec
	// (internal/netspec) take the mark from here.
	Kernel bool
}

// BNStats are one BatchNorm layer's running statistics.
type BNStats struct {
	Name     string
	Mean     []float32
	Variance []float32
}

// Net is a SmallerVGGNet with its weights. A Net is not safe for concurrent
// use: one goroutine trains or predicts at a time.
type Net struct {
	cfg    Config
	params []*Param
	bn     []*bnState
	bnName []string
	train  map[int]*graph
	infer  map[int]*graph
	sc     *scratch // working memory of the conv layers, shared by all graphs
}

// convSpec lists the conv layers: input channels come from the previous one.
var convOut = [5]int{32, 64, 64, 128, 128}

// New builds a net with Glorot-uniform weights (zero biases, BatchNorm γ=1,
// β=0, running mean 0 and variance 1) drawn from seed.
func New(cfg Config, seed uint64) (*Net, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("model config: %w", err)
	}
	n := &Net{cfg: cfg, train: map[int]*graph{}, infer: map[int]*graph{}, sc: &scratch{}}
	rng := rand.New(rand.NewPCG(seed, 0x7a11025eed))
	glorot := func(name string, shape []int, fanIn, fanOut int) {
		p := newParam(name, shape)
		p.Kernel = true // the Glorot-initialised tensors are the kernels
		lim := math.Sqrt(6 / float64(fanIn+fanOut))
		for i := range p.Data {
			p.Data[i] = float32((rng.Float64()*2 - 1) * lim)
		}
		n.params = append(n.params, p)
	}
	fill := func(name string, size int, v float32) {
		p := newParam(name, []int{size})
		for i := range p.Data {
			p.Data[i] = v
		}
		n.params = append(n.params, p)
	}
	in := cfg.Channels
	for i, o := range convOut {
		glorot(fmt.Sprintf("conv%d/w", i+1), []int{o, in, 3, 3}, in*9, o*9)
		fill(fmt.Sprintf("conv%d/b", i+1), o, 0)
		fill(fmt.Sprintf("bn%d/gamma", i+1), o, 1)
		fill(fmt.Sprintf("bn%d/beta", i+1), o, 0)
		n.addBN(fmt.Sprintf("bn%d", i+1), o)
		in = o
	}
	flat := convOut[4] * cfg.FinalSide() * cfg.FinalSide()
	glorot("dense1/w", []int{flat, cfg.Dense}, flat, cfg.Dense)
	fill("dense1/b", cfg.Dense, 0)
	fill("bn6/gamma", cfg.Dense, 1)
	fill("bn6/beta", cfg.Dense, 0)
	n.addBN("bn6", cfg.Dense)
	glorot("out/w", []int{cfg.Dense, cfg.Labels}, cfg.Dense, cfg.Labels)
	fill("out/b", cfg.Labels, 0)
	return n, nil
}

func newParam(name string, shape []int) *Param {
	size := 1
	for _, d := range shape {
		size *= d
	}
	return &Param{Name: name, Shape: append([]int(nil), shape...), Data: make([]float32, size)}
}

func (n *Net) addBN(name string, c int) {
	st := &bnState{mean: make([]float32, c), variance: make([]float32, c), momentum: n.cfg.BNMoment}
	for i := range st.variance {
		st.variance[i] = 1
	}
	n.bn = append(n.bn, st)
	n.bnName = append(n.bnName, name)
}

// Config returns the architecture.
func (n *Net) Config() Config { return n.cfg }

// Params returns the trainable tensors in a fixed order. The slices alias the
// net's weights: writing them changes the net.
func (n *Net) Params() []*Param { return n.params }

// BN returns the BatchNorm running statistics; the slices alias the net's.
func (n *Net) BN() []BNStats {
	out := make([]BNStats, len(n.bn))
	for i, st := range n.bn {
		out[i] = BNStats{Name: n.bnName[i], Mean: st.mean, Variance: st.variance}
	}
	return out
}

// NumParams is the number of trainable scalars.
func (n *Net) NumParams() int {
	t := 0
	for _, p := range n.params {
		t += len(p.Data)
	}
	return t
}

// DropoutSeed is the dropout seed of the worker with the given rank in a run
// seeded with runSeed. Rank 0 (and the single-process trainer) use the run
// seed itself; others mix in their rank, so workers drop different units.
func DropoutSeed(runSeed, rank uint64) uint64 {
	if rank == 0 {
		return runSeed
	}
	return mix64(runSeed, rank)
}

// StepOptions control one training step.
type StepOptions struct {
	Dropout bool   // apply dropout (training); off for gradient checks
	Seed    uint64 // dropout seed: run seed mixed with the worker's rank
	Step    uint64 // dropout step: with Seed, fixes every mask
	// DropoutOffset is where this batch starts in a larger batch that
	// data-parallel workers share (images before it): every dropout layer
	// skips that many images' draws, so that workers with the same Seed
	// and Step, at offsets 0, B, 2B, …, draw between them exactly the masks
	// one process draws for the whole batch.
	DropoutOffset int
	BN            BNMode // BNTrain normally
	// BNSync, if set (with BNTrain), makes BatchNorm synchronised across
	// data-parallel workers: every BatchNorm layer calls it once forward
	// (slot 2·layer: a count, then per channel the sums of x, then of x²)
	// and once backward (slot 2·layer+1: per channel Σ dy, then Σ dy·x),
	// and it must replace vals, in place, with their element-wise totals
	// over every worker's batch of the step. Every worker then normalises
	// with the statistics of the whole global batch, and the averaged
	// gradients are those of one process training on it (PyTorch's
	// SyncBatchNorm). An error fails the step: TrainStep returns it,
	// wrapped, without the VM's trace of the op that called BNSync.
	BNSync func(slot int, vals []float64) error
	// PosWeight, if set (one weight per label), weighs the positive targets
	// of label j by PosWeight[j] in the loss, as PyTorch's
	// BCEWithLogitsLoss(pos_weight): for imbalanced labels, neg/pos of the
	// training counts makes a rare label's positives count as much as its
	// negatives. Nil is weight 1 everywhere.
	PosWeight []float32
	// GradReady, if set, is called during the backward pass with each
	// parameter's index (in Params order) and gradient as soon as that
	// gradient is final, in the order backprop produces them (last layer
	// first), so that a worker can send it while the rest is computed.
	// It runs on the step's goroutine and must not block; the slice must
	// not be written, and is valid until the next step.
	GradReady func(param int, grad []float32)
}

// TrainStep runs forward and backward on one batch: x holds batch images
// (NCHW, batch·InputLen floats), y the 0/1 targets (batch·Labels). It returns
// the mean loss and the gradient of every parameter (aligned with Params; the
// slices are reused by the next step). The weights are not changed; in BNTrain
// mode the running statistics are.
func (n *Net) TrainStep(x, y []float32, batch int, opt StepOptions) (float64, [][]float32, error) {
	g, err := n.graph(batch, true)
	if err != nil {
		return 0, nil, err
	}
	if len(x) != len(g.x) || len(y) != len(g.y) {
		return 0, nil, fmt.Errorf("train step: got %d inputs and %d targets, want %d and %d", len(x), len(y), len(g.x), len(g.y))
	}
	copy(g.x, x)
	copy(g.y, y)
	if opt.DropoutOffset < 0 {
		return 0, nil, fmt.Errorf("train step: dropout offset %d", opt.DropoutOffset)
	}
	if opt.PosWeight != nil && len(opt.PosWeight) != n.cfg.Labels {
		return 0, nil, fmt.Errorf("train step: %d positive weights for %d labels", len(opt.PosWeight), n.cfg.Labels)
	}
	g.mode = runMode{bn: opt.BN, dropout: opt.Dropout, seed: opt.Seed, step: opt.Step, offset: opt.DropoutOffset, sync: opt.BNSync,
		posWeight: opt.PosWeight}
	if opt.GradReady != nil {
		g.mode.ready = func(p int) { opt.GradReady(p, g.grads[p]) }
	}
	if err := g.run(); err != nil {
		if g.mode.syncErr != nil {
			// the exchange failed (the step was cancelled, the
			// coordinator went away): that is the step's error, not the
			// VM's trace of the op that waited for it
			return 0, nil, fmt.Errorf("train step: %w", g.mode.syncErr)
		}
		return 0, nil, fmt.Errorf("train step: %w", err)
	}
	return g.loss.loss, g.grads, nil
}

// Predict writes sigmoid probabilities for batch images into out
// (batch·Labels), using the BatchNorm running statistics and no dropout.
func (n *Net) Predict(x []float32, batch int, out []float32) error {
	return n.forward(x, batch, out, BNInfer)
}

func (n *Net) forward(x []float32, batch int, out []float32, mode BNMode) error {
	g, err := n.graph(batch, false)
	if err != nil {
		return err
	}
	if len(x) != len(g.x) || len(out) != batch*n.cfg.Labels {
		return fmt.Errorf("predict: got %d inputs and room for %d outputs, want %d and %d", len(x), len(out), len(g.x), batch*n.cfg.Labels)
	}
	copy(g.x, x)
	g.mode = runMode{bn: mode}
	if err := g.run(); err != nil {
		return fmt.Errorf("predict: %w", err)
	}
	copy(out, g.probs.out)
	return nil
}

// BeginBNEstimate starts re-estimating the BatchNorm statistics with the
// current weights: call EstimateBNBatch on a number of training batches, then
// EndBNEstimate. Running averages lag behind weights that are still moving;
// exact statistics of the current weights make evaluation match training.
func (n *Net) BeginBNEstimate() {
	for _, st := range n.bn {
		st.sumMean = make([]float64, len(st.mean))
		st.sumSq = make([]float64, len(st.mean))
		st.count = 0
	}
}

// EstimateBNBatch runs one batch forward (batch statistics, no dropout) and
// accumulates every BatchNorm layer's statistics.
func (n *Net) EstimateBNBatch(x []float32, batch int) error {
	if n.bn[0].sumMean == nil {
		return errors.New("estimate batchnorm: BeginBNEstimate was not called")
	}
	return n.forward(x, batch, make([]float32, batch*n.cfg.Labels), BNEstimate)
}

// EndBNEstimate replaces the running statistics by the accumulated ones: the
// mean and variance over all positions of all batches seen.
func (n *Net) EndBNEstimate() error {
	for i, st := range n.bn {
		if st.sumMean == nil || st.count == 0 {
			return fmt.Errorf("estimate batchnorm: no batches seen by %s", n.bnName[i])
		}
		for c := range st.mean {
			mean := st.sumMean[c] / st.count
			v := st.sumSq[c]/st.count - mean*mean
			st.mean[c] = float32(mean)
			st.variance[c] = float32(max(v, 0))
		}
		st.sumMean, st.sumSq, st.count = nil, nil, 0
	}
	return nil
}

// graph is the net built for one batch size, for training (forward and
// backward) or inference (forward to probabilities).
type graph struct {
	g     *G.ExprGraph
	vm    G.VM
	mode  runMode
	x, y  []float32
	loss  *bceLoss
	probs *sigmoidOp
	grads [][]float32
}

func (g *graph) run() error {
	defer g.vm.Reset()
	return g.vm.RunAll()
}

// bufferOp is an op whose output buffer can be read directly after a run:
// a parameter's gradient, final once the op has run (readyHook).
type bufferOp interface {
	buffer() []float32
	readyHook() *gradReady
}

// gradReady makes a gradient op tell the step (StepOptions.GradReady) that
// the gradients of its parameters are final, as soon as it has run.
type gradReady struct {
	params []int
	mode   *runMode
}

func (r *gradReady) readyHook() *gradReady { return r }

func (r *gradReady) fire() {
	if r.mode != nil && r.mode.ready != nil {
		for _, p := range r.params {
			r.mode.ready(p)
		}
	}
}

func (op *convGradWeight) buffer() []float32 { return op.out }
func (op *biasGrad) buffer() []float32       { return op.out }
func (op *bnGrad) buffer() []float32         { return op.out }
func (op *denseGrad) buffer() []float32      { return op.out }

func (n *Net) graph(batch int, train bool) (*graph, error) {
	cache := n.infer
	if train {
		cache = n.train
	}
	if g, ok := cache[batch]; ok {
		return g, nil
	}
	if batch < 1 || (train && batch < 2) {
		return nil, fmt.Errorf("batch size %d: want at least %d", batch, map[bool]int{true: 2, false: 1}[train])
	}
	g, err := n.build(batch, train)
	if err != nil {
		return nil, fmt.Errorf("build graph for batch %d: %w", batch, err)
	}
	cache[batch] = g
	return g, nil
}

func (n *Net) build(batch int, train bool) (*graph, error) {
	cfg := n.cfg
	gr := &graph{g: G.NewGraph()}
	eg := gr.g
	var xT *tensor.Dense
	xT, gr.x = newBuf(tensor.Shape{batch, cfg.Channels, cfg.Size, cfg.Size})
	x := G.NewTensor(eg, tensor.Float32, 4, G.WithShape(xT.Shape()...), G.WithName("x"), G.WithValue(xT))

	nodes := make(map[string]*G.Node, len(n.params))
	var pnodes G.Nodes
	for _, p := range n.params {
		t := tensor.New(tensor.WithShape(p.Shape...), tensor.WithBacking(p.Data))
		nd := G.NewTensor(eg, tensor.Float32, len(p.Shape), G.WithShape(p.Shape...), G.WithName(p.Name), G.WithValue(t))
		nodes[p.Name] = nd
		pnodes = append(pnodes, nd)
	}
	var err error
	apply := func(op G.Op, in ...*G.Node) *G.Node {
		if err != nil {
			return nil
		}
		var out *G.Node
		out, err = G.ApplyOp(op, in...)
		return out
	}
	h := x
	c, side := cfg.Channels, cfg.Size
	// pools[i] is the max-pool after conv block i (0: none)
	pools := [5]int{3, 0, 2, 0, 2}
	conv := func(i int) {
		o := convOut[i]
		w, b := nodes[fmt.Sprintf("conv%d/w", i+1)], nodes[fmt.Sprintf("conv%d/b", i+1)]
		gamma, beta := nodes[fmt.Sprintf("bn%d/gamma", i+1)], nodes[fmt.Sprintf("bn%d/beta", i+1)]
		if !train {
			// inference: the whole block in one op that keeps nothing for a
			// backward pass; dropout is the identity
			op := newConvBlock(batch, c, side, side, o, pools[i], cfg.BNEps, i, n.bn[i], &gr.mode, n.sc)
			h = apply(op, h, w, b, gamma, beta)
			c, side = o, op.oh
			return
		}
		// conv → ReLU (fused into the conv) → BatchNorm, which also applies
		// the ReLU's mask to the gradient it passes back.
		// The conv also sums each output plane for the BatchNorm's
		// statistics; a pool after the BatchNorm is fused into it.
		cv := newConv3x3(batch, c, side, side, o, i > 0, true)
		cv.gradMasked = true
		cv.sc = n.sc
		cv.stats = make([]float64, 2*batch*o)
		h = apply(cv, h, w, b)
		shape := tensor.Shape{batch, o, side, side}
		if k := pools[i]; k > 0 {
			bp := newBNPool(shape, k, cfg.BNEps, i, n.bn[i], &gr.mode)
			bp.bn.maskInput, bp.bn.preStats = true, cv.stats
			h = apply(bp, h, gamma, beta)
			side = bp.oh
		} else {
			bn := newBatchNorm(shape, cfg.BNEps, i, n.bn[i], &gr.mode)
			bn.maskInput, bn.preStats = true, cv.stats
			h = apply(bn, h, gamma, beta)
		}
		c = o
	}
	pool := func(layer uint64, p float64) {
		if !train {
			return // pooled inside the conv block
		}
		h = apply(newDropout(tensor.Shape{batch, c, side, side}, p, layer, &gr.mode), h)
	}
	conv(0)
	pool(1, cfg.Dropout[0])
	conv(1)
	conv(2)
	pool(2, cfg.Dropout[1])
	conv(3)
	conv(4)
	pool(3, cfg.Dropout[2])
	flat := c * side * side
	h = apply(newFlatten(batch, flat, 4), h)
	ds := tensor.Shape{batch, cfg.Dense}
	d1 := newDense(batch, flat, cfg.Dense, true)
	d1.gradMasked = true
	h = apply(d1, h, nodes["dense1/w"], nodes["dense1/b"])
	bn6 := newBatchNorm(ds, cfg.BNEps, 5, n.bn[5], &gr.mode)
	bn6.maskInput = true
	h = apply(bn6, h, nodes["bn6/gamma"], nodes["bn6/beta"])
	if train {
		h = apply(newDropout(ds, cfg.Dropout[3], 4, &gr.mode), h)
	}
	logits := apply(newDense(batch, cfg.Dense, cfg.Labels, false), h, nodes["out/w"], nodes["out/b"])
	if err != nil {
		return nil, err
	}
	if !train {
		gr.probs = newSigmoid(tensor.Shape{batch, cfg.Labels})
		if _, err := G.ApplyOp(gr.probs, logits); err != nil {
			return nil, err
		}
		gr.vm = G.NewTapeMachine(eg)
		return gr, nil
	}
	var yT *tensor.Dense
	yT, gr.y = newBuf(tensor.Shape{batch, cfg.Labels})
	y := G.NewTensor(eg, tensor.Float32, 2, G.WithShape(yT.Shape()...), G.WithName("y"), G.WithValue(yT))
	gr.loss = newBCELoss(batch, cfg.Labels, &gr.mode)
	loss, err := G.ApplyOp(gr.loss, logits, y)
	if err != nil {
		return nil, err
	}
	grads, err := G.Grad(loss, pnodes...)
	if err != nil {
		return nil, fmt.Errorf("differentiate: %w", err)
	}
	for i, gn := range grads {
		b, ok := gn.Op().(bufferOp)
		if !ok {
			return nil, fmt.Errorf("gradient of %s comes from %v, not from a layer op", n.params[i].Name, gn.Op())
		}
		gr.grads = append(gr.grads, b.buffer())
		h := b.readyHook()
		h.params, h.mode = append(h.params, i), &gr.mode
	}
	gr.vm = G.NewTapeMachine(eg)
	return gr, nil
}

// ForwardFLOPs is the multiply-add count ×2 of one image's forward pass
// through the convolutions and dense layers (the rest is noise): 106.7 MFLOP
// at 64 px with 15 labels. A training step costs about three times as much.
func (c Config) ForwardFLOPs() float64 {
	f := 0.0
	for _, v := range c.KernelFLOPs() {
		f += v
	}
	return f
}

// KernelFLOPs is ForwardFLOPs by layer, keyed by the layer's kernel's
// parameter name (conv1/w … conv5/w, dense1/w, out/w): where a step's
// time goes, layer by layer (a layer's backward pass costs about twice its
// forward).
func (c Config) KernelFLOPs() map[string]float64 {
	m := map[string]float64{}
	in, side := c.Channels, c.Size
	for i, o := range convOut {
		m[fmt.Sprintf("conv%d/w", i+1)] = 2 * float64(o*in*9*side*side)
		in = o
		switch i {
		case 0:
			side /= 3
		case 2, 4:
			side /= 2
		}
	}
	flat := in * side * side
	m["dense1/w"] = 2 * float64(flat*c.Dense)
	m["out/w"] = 2 * float64(c.Dense*c.Labels)
	return m
}
