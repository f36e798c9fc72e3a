package model

import (
	"fmt"
	"hash"
	"hash/fnv"
	"sync/atomic"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Every layer of the net is a custom gorgonia Op: the stock ops are either wrong
// for this net (Dropout's gradient, BatchNorm's float32 sums), missing (Conv2d
// bias) or too slow. An op owns its output buffer and reuses it across steps, so
// a training step allocates nothing; the graph is built once per batch size.
//
// Ops only implement Do (not UsePreallocDo): gorgonia's tape machine then stores
// the op's own buffer in its register instead of writing into a register shared
// with another node.

var opSeq atomic.Uint64

// opBase is the boilerplate shared by all ops: identity, type and shape.
type opBase struct {
	name   string
	id     uint64
	inDims []int // rank of each input (0 = scalar)
	out    tensor.Shape
}

func newOpBase(name string, out tensor.Shape, inDims ...int) opBase {
	return opBase{name: name, id: opSeq.Add(1), inDims: inDims, out: out.Clone()}
}

func (o *opBase) Arity() int { return len(o.inDims) }

func (o *opBase) Type() hm.Type {
	a := hm.TypeVariable('a')
	ts := make(hm.Types, 0, len(o.inDims)+1)
	for _, d := range o.inDims {
		ts = append(ts, typeOfRank(d, a))
	}
	ts = append(ts, typeOfRank(len(o.out), a))
	return hm.NewFnType(ts...)
}

func typeOfRank(d int, a hm.TypeVariable) hm.Type {
	if d == 0 {
		return a
	}
	return &G.TensorType{Dims: d, Of: a}
}

func (o *opBase) InferShape(...G.DimSizer) (tensor.Shape, error) { return o.out.Clone(), nil }
func (o *opBase) ReturnsPtr() bool                               { return true }
func (o *opBase) CallsExtern() bool                              { return false }
func (o *opBase) OverwritesInput() int                           { return -1 }
func (o *opBase) WriteHash(h hash.Hash)                          { fmt.Fprintf(h, "%s#%d", o.name, o.id) }
func (o *opBase) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}
func (o *opBase) String() string { return fmt.Sprintf("%s#%d", o.name, o.id) }

// newBuf returns a float32 tensor of shape s and its backing slice.
func newBuf(s tensor.Shape) (*tensor.Dense, []float32) {
	data := make([]float32, s.TotalSize())
	return tensor.New(tensor.WithShape(s...), tensor.WithBacking(data)), data
}

// f32 returns the float32 backing of a value, checking its length.
func f32(v G.Value, want int, what string) ([]float32, error) {
	t, ok := v.(tensor.Tensor)
	if !ok {
		return nil, fmt.Errorf("%s: want a tensor, got %T", what, v)
	}
	d, ok := t.Data().([]float32)
	if !ok {
		return nil, fmt.Errorf("%s: want float32 data, got %T", what, t.Data())
	}
	if want >= 0 && len(d) != want {
		return nil, fmt.Errorf("%s: want %d values, got %d", what, want, len(d))
	}
	return d, nil
}

// scalarOf reads a scalar float32 value (the gradient seed of the loss).
func scalarOf(v G.Value) (float32, error) {
	switch s := v.(type) {
	case *G.F32:
		return float32(*s), nil
	case tensor.Tensor:
		d, ok := s.Data().([]float32)
		if ok && len(d) == 1 {
			return d[0], nil
		}
		if f, ok := s.Data().(float32); ok {
			return f, nil
		}
	}
	return 0, fmt.Errorf("want a float32 scalar, got %T", v)
}
