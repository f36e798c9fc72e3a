package wire

import (
	"fmt"
	"math"
	"reflect"
	"testing"
)

// netSpec is SmallerVGGNet's tensor list (as model.New builds it) for
// size×size RGB images and labels outputs, with the BatchNorm running
// statistics as State tensors. Kept here to test with the real shapes
// without importing the net.
func netSpec(size, labels int) Spec {
	var s Spec
	add := func(name string, n int, k Kind) { s = append(s, Tensor{Name: name, Size: n, Kind: k}) }
	in := 3
	for i, o := range []int{32, 64, 64, 128, 128} {
		add(fmt.Sprintf("conv%d/w", i+1), o*in*9, Param)
		add(fmt.Sprintf("conv%d/b", i+1), o, Param)
		add(fmt.Sprintf("bn%d/gamma", i+1), o, Param)
		add(fmt.Sprintf("bn%d/beta", i+1), o, Param)
		in = o
	}
	side := size / 3 / 2 / 2
	add("dense1/w", 128*side*side*1024, Param)
	add("dense1/b", 1024, Param)
	add("bn6/gamma", 1024, Param)
	add("bn6/beta", 1024, Param)
	add("out/w", 1024*labels, Param)
	add("out/b", labels, Param)
	for i, c := range []int{32, 64, 64, 128, 128, 1024} {
		add(fmt.Sprintf("bn%d/mean", i+1), c, State)
		add(fmt.Sprintf("bn%d/var", i+1), c, State)
	}
	return s
}

func sizesSpec(sizes ...int) Spec {
	s := make(Spec, len(sizes))
	for i, n := range sizes {
		s[i] = Tensor{Name: fmt.Sprintf("t%d", i), Size: n}
	}
	return s
}

func TestPlan(t *testing.T) {
	many := make([]int, 300)
	for i := range many {
		many[i] = 1 + (i*7919)%5000
	}
	for _, tc := range []struct {
		name    string
		spec    Spec
		servers []int
	}{
		{"one tensor", sizesSpec(1000), []int{1, 2, 3, 7, 1000}},
		{"net 64px", netSpec(64, 11), []int{1, 2, 3, 4, 5, 8}},
		{"net 96px", netSpec(96, 11), []int{1, 2, 3, 4, 7, 16}},
		{"lopsided", sizesSpec(10, 20, 5_000_000, 30, 7, 100_000, 3), []int{2, 3, 4, 6}},
		{"many small", sizesSpec(many...), []int{1, 2, 5, 9, 32}},
		{"tiny tensors", sizesSpec(1, 1, 1, 1, 1), []int{1, 2, 5}},
	} {
		for _, servers := range tc.servers {
			t.Run(fmt.Sprintf("%s/P=%d", tc.name, servers), func(t *testing.T) {
				p, err := NewPlan(tc.spec, servers)
				if err != nil {
					t.Fatal(err)
				}
				checkPlan(t, p)
				q, _ := NewPlan(tc.spec, servers)
				if !reflect.DeepEqual(p, q) {
					t.Error("two plans of the same spec differ")
				}
			})
		}
	}
}

func checkPlan(t *testing.T, p *Plan) {
	t.Helper()
	n := p.Spec.Total()
	covered := make([]int, len(p.Spec)) // next uncovered float of each tensor
	mean := float64(n) / float64(p.Servers)
	total := 0
	for s := 0; s < p.Servers; s++ {
		flat := 0
		for _, part := range p.ServerParts(s) {
			if part.Server != s || part.Len < 1 || part.Flat != flat || part.Name != p.Spec[part.Tensor].Name || part.Kind != p.Spec[part.Tensor].Kind {
				t.Fatalf("server %d: bad part %+v at flat %d", s, part, flat)
			}
			if part.Offset != covered[part.Tensor] {
				t.Fatalf("part %+v starts at %d; tensor covered up to %d", part, part.Offset, covered[part.Tensor])
			}
			covered[part.Tensor] += part.Len
			flat += part.Len
			if sz := p.Spec[part.Tensor].Size; part.Len != sz && sz <= n/(64*p.Servers) {
				t.Errorf("small tensor %q (%d floats) split", part.Name, sz)
			}
		}
		if flat != p.ServerLen(s) {
			t.Errorf("server %d: parts hold %d floats, ServerLen %d", s, flat, p.ServerLen(s))
		}
		if dev := math.Abs(float64(flat) - mean); dev > 0.016*mean+1 {
			t.Errorf("server %d holds %d floats; mean %.0f (off by %.2f%%)", s, flat, mean, 100*dev/mean)
		}
		total += flat
	}
	for i, c := range covered {
		if c != p.Spec[i].Size {
			t.Errorf("tensor %q covered to %d of %d", p.Spec[i].Name, c, p.Spec[i].Size)
		}
	}
	if total != n {
		t.Errorf("plan covers %d floats, spec has %d", total, n)
	}
	for i, part := range p.Parts {
		if part.ID != i {
			t.Errorf("part %d has ID %d", i, part.ID)
		}
	}
}

func TestPlanBalanceNet(t *testing.T) {
	// The naive placement (whole tensors) puts dense1/w (94% of the floats
	// at 96 px) on one server; the plan splits it.
	spec := netSpec(96, 11)
	p, err := NewPlan(spec, 4)
	if err != nil {
		t.Fatal(err)
	}
	split := 0
	for _, part := range p.Parts {
		if part.Name == "dense1/w" {
			split++
		}
	}
	if split < 4 {
		t.Errorf("dense1/w is in %d parts, want ≥ 4", split)
	}
	t.Logf("96 px: %d floats (%.1f MB), %d parts on 4 servers", spec.Total(), float64(spec.Total())*4/1e6, len(p.Parts))
}

func TestPlanFingerprint(t *testing.T) {
	a, _ := NewPlan(sizesSpec(10, 20), 2)
	for _, tc := range []struct {
		name    string
		spec    Spec
		servers int
	}{
		{"servers", sizesSpec(10, 20), 3},
		{"size", sizesSpec(10, 21), 2},
		{"order", Spec{{Name: "t1", Size: 20}, {Name: "t0", Size: 10}}, 2},
		{"kind", Spec{{Name: "t0", Size: 10}, {Name: "t1", Size: 20, Kind: State}}, 2},
	} {
		b, err := NewPlan(tc.spec, tc.servers)
		if err != nil {
			t.Fatal(err)
		}
		if a.Fingerprint() == b.Fingerprint() {
			t.Errorf("%s: fingerprint unchanged", tc.name)
		}
	}
	c, _ := NewPlan(sizesSpec(10, 20), 2)
	if a.Fingerprint() != c.Fingerprint() {
		t.Error("fingerprint of the same plan differs")
	}
	// the kernel mark is for the servers' optimizer, not the plan
	k := sizesSpec(10, 20)
	k[1].Kernel = true
	if d, _ := NewPlan(k, 2); d.Fingerprint() != a.Fingerprint() {
		t.Error("a kernel mark changed the fingerprint")
	}
}

func TestPlanErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    Spec
		servers int
	}{
		{"empty", nil, 1},
		{"no servers", sizesSpec(4), 0},
		{"more servers than floats", sizesSpec(2, 1), 4},
		{"zero size", sizesSpec(3, 0), 1},
		{"duplicate", Spec{{Name: "a", Size: 1}, {Name: "a", Size: 1}}, 1},
		{"no name", Spec{{Size: 1}}, 1},
		{"bad kind", Spec{{Name: "a", Size: 1, Kind: 9}}, 1},
		{"state kernel", Spec{{Name: "a", Size: 1, Kind: State, Kernel: true}}, 1},
	} {
		if _, err := NewPlan(tc.spec, tc.servers); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
