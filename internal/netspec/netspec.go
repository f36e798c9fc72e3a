// Package netspec maps the net's tensors onto the parameter servers' wire
// spec: each BatchNorm layer's running mean and variance (wire.State), then
// the trainable parameters from the last layer's to the first's
// (wire.Param): the order in which a training step finishes them (the
// statistics in the forward pass, the gradients in backprop), so that a
// worker's push to every server can send its parts in plan order while the
// rest of the gradient is computed. Workers, the parameter servers and the
// coordinator build the spec here, so their plans agree (the plan
// fingerprint in every message checks it).
package netspec

import (
	"context"

	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// Tensors returns the net's wire spec and the slices holding each tensor's
// values (aliases of the net's weights and statistics, in spec order). The
// net's kernels (model.Param.Kernel) are the spec's.
func Tensors(n *model.Net) (wire.Spec, [][]float32) {
	var spec wire.Spec
	var data [][]float32
	for _, st := range n.BN() {
		spec = append(spec,
			wire.Tensor{Name: st.Name + "/mean", Size: len(st.Mean), Kind: wire.State},
			wire.Tensor{Name: st.Name + "/var", Size: len(st.Variance), Kind: wire.State})
		data = append(data, st.Mean, st.Variance)
	}
	ps := n.Params()
	for i := range ps {
		p := ps[len(ps)-1-i]
		spec = append(spec, wire.Tensor{Name: p.Name, Size: len(p.Data), Kind: wire.Param, Kernel: p.Kernel})
		data = append(data, p.Data)
	}
	return spec, data
}

// ParamTensor is the spec index of parameter p (in n.Params() order).
func ParamTensor(n *model.Net, p int) int {
	return 2*len(n.BN()) + len(n.Params()) - 1 - p
}

// TensorParam is the parameter (in n.Params() order) at spec index t, or -1
// for a BatchNorm statistic.
func TensorParam(n *model.Net, t int) int {
	if t < 2*len(n.BN()) {
		return -1
	}
	return 2*len(n.BN()) + len(n.Params()) - 1 - t
}

// Spec is the wire spec of the architecture cfg.
func Spec(cfg model.Config) (wire.Spec, error) {
	n, err := model.New(cfg, 0)
	if err != nil {
		return nil, err
	}
	s, _ := Tensors(n)
	return s, nil
}

// Push assembles what a worker pushes after a step: the net's current
// BatchNorm statistics and the gradients of the parameters (grads, aligned
// with n.Params()), in spec order. The result aliases its inputs.
func Push(n *model.Net, grads [][]float32) [][]float32 {
	var out [][]float32
	for _, st := range n.BN() {
		out = append(out, st.Mean, st.Variance)
	}
	for i := range grads {
		out = append(out, grads[len(grads)-1-i])
	}
	return out
}

// Open opens a run's shard store and manifest and builds the run's net (the
// architecture the manifest's image size and labels call for, weights drawn
// from seed): what the coordinator and every worker start from. The store
// retries every operation under retry (store.OpenRetry).
func Open(ctx context.Context, data string, seed uint64, retry store.RetryPolicy) (store.Store, *shard.Manifest, *model.Net, error) {
	st, err := store.OpenRetry(ctx, data, retry)
	if err != nil {
		return nil, nil, nil, err
	}
	man, err := shard.LoadManifest(ctx, st)
	if err != nil {
		return nil, nil, nil, err
	}
	net, err := model.New(model.DefaultConfig(man.Width, len(man.Labels)), seed)
	if err != nil {
		return nil, nil, nil, err
	}
	return st, man, net, nil
}
