package wire

import (
	"errors"
	"fmt"
	"hash/fnv"
	"unicode/utf8"
)

// Kind says how the parameter server treats a tensor.
type Kind uint8

const (
	// Param is a trained tensor: workers push its gradient, the server
	// applies the optimizer.
	Param Kind = iota
	// State is a tensor that is not trained (BatchNorm running statistics):
	// workers push its value, the server stores their average (sync) or the
	// latest value (async). No optimizer touches it.
	State
)

func (k Kind) String() string {
	switch k {
	case Param:
		return "param"
	case State:
		return "state"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Tensor is one named float32 tensor of the model, flattened.
type Tensor struct {
	Name string `json:"name"`
	Size int    `json:"size"` // floats
	Kind Kind   `json:"kind"`
	// Kernel marks a Param that is a layer's kernel (conv filters, a dense
	// weight matrix), not a bias or a normalisation parameter: the server's
	// optimizer applies weight decay to kernels only (optim.Tensor). It
	// does not change the plan, so it is not in the fingerprint; the
	// servers read it from the spec the leader publishes.
	Kernel bool `json:"kernel,omitempty"`
}

// Spec is the ordered list of the model's tensors. Workers and servers must
// build it identically: its order, names, sizes and kinds fix the plan.
type Spec []Tensor

// Limits of a spec.
const (
	MaxTensors     = 1 << 16
	MaxNameBytes   = 255
	MaxTotalFloats = 1<<31 - 1 // 8 GiB of float32
)

// Total is the number of floats of all tensors.
func (s Spec) Total() int {
	t := 0
	for _, x := range s {
		t += x.Size
	}
	return t
}

// Sizes returns the tensor sizes in order.
func (s Spec) Sizes() []int {
	out := make([]int, len(s))
	for i, x := range s {
		out[i] = x.Size
	}
	return out
}

// Validate reports whether the spec is usable: 1..MaxTensors tensors with
// distinct non-empty UTF-8 names of at most MaxNameBytes, positive sizes,
// known kinds.
func (s Spec) Validate() error {
	if len(s) == 0 || len(s) > MaxTensors {
		return fmt.Errorf("%w: %d tensors, want 1..%d", ErrBadSpec, len(s), MaxTensors)
	}
	seen := make(map[string]bool, len(s))
	total := 0
	var errs []error
	for i, t := range s {
		switch {
		case t.Name == "" || len(t.Name) > MaxNameBytes || !utf8.ValidString(t.Name):
			errs = append(errs, fmt.Errorf("tensor %d: name %q: want 1..%d bytes of UTF-8", i, t.Name, MaxNameBytes))
		case seen[t.Name]:
			errs = append(errs, fmt.Errorf("tensor %d: duplicate name %q", i, t.Name))
		}
		seen[t.Name] = true
		if t.Size < 1 || t.Size > MaxTotalFloats {
			errs = append(errs, fmt.Errorf("tensor %q: size %d: want ≥ 1", t.Name, t.Size))
		} else {
			total += t.Size
		}
		if t.Kind != Param && t.Kind != State {
			errs = append(errs, fmt.Errorf("tensor %q: unknown kind %d", t.Name, t.Kind))
		} else if t.Kernel && t.Kind != Param {
			errs = append(errs, fmt.Errorf("tensor %q: a %s tensor cannot be a kernel", t.Name, t.Kind))
		}
	}
	if total > MaxTotalFloats {
		errs = append(errs, fmt.Errorf("%d floats in all: want ≤ %d", total, MaxTotalFloats))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrBadSpec, errors.Join(errs...))
	}
	return nil
}

// Part is a contiguous range of one tensor, held by one server.
type Part struct {
	ID     int    // index in Plan.Parts
	Server int    // the server that holds it
	Tensor int    // index in the spec
	Name   string // the tensor's name
	Kind   Kind   // the tensor's kind
	Offset int    // first float of the range, within the tensor
	Len    int    // floats
	Flat   int    // first float of the range within the server's flat vector
}

// Plan splits a spec across servers. Build it with NewPlan: a worker and a
// server given the same spec and server count get the same plan, and its
// Fingerprint travels in every push and pull so a mismatch is caught.
type Plan struct {
	Spec    Spec
	Servers int
	// Parts in order of the concatenated parameter vector: by server, then by
	// tensor, then by offset. Server i holds Parts[first[i]:first[i+1]].
	Parts []Part

	first       []int
	serverLen   []int
	fingerprint uint64
}

// NewPlan cuts the concatenation of all tensors (in spec order) into
// servers nearly equal contiguous ranges, one per server, so that bytes are
// balanced however lopsided the tensors are; a big tensor is split across
// servers. A cut that would fall inside a small tensor (at most 1/64 of a
// server's share) moves to that tensor's nearest edge, so small tensors are
// never split; that moves each cut by at most 1/128 of a share, and every
// server's load stays within ±1.6% (+1 float) of the mean.
func NewPlan(spec Spec, servers int) (*Plan, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	n := spec.Total()
	if servers < 1 || servers > n || servers > 1<<16 {
		return nil, fmt.Errorf("%w: %d servers for %d floats", ErrBadSpec, servers, n)
	}
	start := make([]int, len(spec)+1)
	for i, t := range spec {
		start[i+1] = start[i] + t.Size
	}
	snapMax := n / (64 * servers)
	cuts := make([]int, servers+1)
	cuts[servers] = n
	t := 0 // tensor containing the cut
	for i := 1; i < servers; i++ {
		b := int((int64(i)*int64(n) + int64(servers)/2) / int64(servers))
		for start[t+1] <= b {
			t++
		}
		if lo, hi := start[t], start[t+1]; b > lo && spec[t].Size <= snapMax {
			if b-lo <= hi-b {
				b = lo
			} else {
				b = hi
			}
		}
		cuts[i] = max(b, cuts[i-1])
	}
	p := &Plan{Spec: spec, Servers: servers, first: make([]int, servers+1), serverLen: make([]int, servers)}
	t = 0
	for s := 0; s < servers; s++ {
		lo, hi := cuts[s], cuts[s+1]
		if hi <= lo {
			return nil, fmt.Errorf("%w: server %d would hold nothing", ErrBadSpec, s)
		}
		p.first[s] = len(p.Parts)
		for start[t+1] <= lo {
			t++
		}
		for u := t; u < len(spec) && start[u] < hi; u++ {
			a, b := max(lo, start[u]), min(hi, start[u+1])
			p.Parts = append(p.Parts, Part{
				ID: len(p.Parts), Server: s, Tensor: u, Name: spec[u].Name, Kind: spec[u].Kind,
				Offset: a - start[u], Len: b - a, Flat: a - lo,
			})
		}
		p.serverLen[s] = hi - lo
	}
	p.first[servers] = len(p.Parts)
	p.fingerprint = fingerprint(spec, servers)
	return p, nil
}

// fingerprint hashes everything the plan is a function of, and the
// algorithm's version.
func fingerprint(spec Spec, servers int) uint64 {
	h := fnv.New64a()
	var b []byte
	b = append(b, "tailor-plan-v1"...)
	b = appendUvarint(b, uint64(servers))
	b = appendUvarint(b, uint64(len(spec)))
	for _, t := range spec {
		b = appendString(b, t.Name)
		b = appendUvarint(b, uint64(t.Size))
		b = append(b, byte(t.Kind))
	}
	h.Write(b)
	return h.Sum64()
}

// Fingerprint identifies the plan (spec and server count).
func (p *Plan) Fingerprint() uint64 { return p.fingerprint }

// ServerParts returns server i's parts, in order. The slice aliases the plan.
func (p *Plan) ServerParts(i int) []Part { return p.Parts[p.first[i]:p.first[i+1]] }

// ServerLen is the number of floats server i holds.
func (p *Plan) ServerLen(i int) int { return p.serverLen[i] }

// FirstPart is the ID of server i's first part.
func (p *Plan) FirstPart(i int) int { return p.first[i] }
