package wire

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func f32bits(b uint32) float32 { return math.Float32frombits(b) }

// TestF16Exhaustive: every binary16 converts to float32 and back to itself
// (NaNs stay NaN with their sign), and float32 → binary16 is monotonic.
func TestF16Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := F32(h)
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			if !math.IsNaN(float64(f)) || math.Signbit(float64(f)) != (h&0x8000 != 0) {
				t.Fatalf("F32(%#04x) = %v, want a NaN of the same sign", h, f)
			}
			if g := F16(f); g&0x7c00 != 0x7c00 || g&0x3ff == 0 || g&0x8000 != h&0x8000 {
				t.Fatalf("F16(F32(%#04x)) = %#04x, want a NaN of the same sign", h, g)
			}
			continue
		}
		if g := F16(f); g != h {
			t.Fatalf("F16(F32(%#04x) = %v) = %#04x, want %#04x", h, f, g, h)
		}
		if want := f16ref(h); math.Float32bits(f) != math.Float32bits(want) {
			t.Fatalf("F32(%#04x) = %v, want %v", h, f, want)
		}
	}
}

// f16ref is the value of a non-NaN binary16 from its definition.
func f16ref(h uint16) float32 {
	s := 1.0
	if h&0x8000 != 0 {
		s = -1
	}
	e, m := int(h>>10&0x1f), float64(h&0x3ff)
	switch e {
	case 0x1f:
		return float32(math.Inf(int(s)))
	case 0:
		return float32(s * math.Ldexp(m, -24))
	}
	return float32(s * math.Ldexp(1024+m, e-25))
}

// TestF16Rounding: halfway between two neighbours rounds to the even one,
// anything off the middle to the nearer; for every pair of neighbours.
func TestF16Rounding(t *testing.T) {
	for i := range 0x7bff + 1 { // positive finite, and the step to Inf
		lo, hi := uint16(i), uint16(i+1)
		a, b := float64(F32(lo)), float64(F32(hi))
		if hi == 0x7c00 {
			b = 65536 // where the next binade would start
		}
		mid := float32((a + b) / 2) // exact: 12 significant bits
		even := lo
		if lo&1 == 1 {
			even = hi
		}
		below := math.Nextafter32(mid, float32(math.Inf(-1)))
		above := math.Nextafter32(mid, float32(math.Inf(1)))
		for _, c := range []struct {
			x    float32
			want uint16
		}{{mid, even}, {below, lo}, {above, hi}} {
			if got := F16(c.x); got != c.want {
				t.Fatalf("F16(%v) between %#04x and %#04x = %#04x, want %#04x", c.x, lo, hi, got, c.want)
			}
			if got := F16(-c.x); got != c.want|0x8000 {
				t.Fatalf("F16(%v) = %#04x, want %#04x", -c.x, got, c.want|0x8000)
			}
		}
	}
}

func TestF16Specials(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		name string
		x    float32
		want uint16
	}{
		{"zero", 0, 0},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"largest", 65504, 0x7bff},
		{"just below the overflow midpoint", 65519.996, 0x7bff},
		{"overflow midpoint rounds to Inf", 65520, 0x7c00},
		{"float32 max", math.MaxFloat32, 0x7c00},
		{"Inf", inf, 0x7c00},
		{"-Inf", -inf, 0xfc00},
		{"smallest normal", 1.0 / 16384, 0x0400},
		{"smallest subnormal", f32bits(0x33800000), 0x0001}, // 2^-24
		{"half the smallest subnormal: tie to 0", f32bits(0x33000000), 0},
		{"just above half the smallest subnormal", f32bits(0x33000001), 0x0001},
		{"float32 subnormal", f32bits(1), 0},
		{"largest subnormal", f32bits(0x387fc000), 0x03ff},
		{"rounds up into the normals", f32bits(0x387ff000), 0x0400},
	} {
		if got := F16(c.x); got != c.want {
			t.Errorf("%s: F16(%v) = %#04x, want %#04x", c.name, c.x, got, c.want)
		}
	}
	for _, nan := range []float32{float32(math.NaN()), f32bits(0x7f800001), f32bits(0xff800001)} {
		if h := F16(nan); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
			t.Errorf("F16(NaN %#08x) = %#04x, want a NaN", math.Float32bits(nan), h)
		}
	}
}

func TestEncodeF16(t *testing.T) {
	tests := []struct {
		name  string
		x     []float32
		scale int
		exact bool
	}{
		{"representable, largest in [2^14, 2^15)", []float32{16384, -1, 0.5, 0, 3.140625, -20000}, 0, true},
		{"representable after a power of two", []float32{1.5e-3 * 0, 0.25, -0.125, 0.375}, 16, true},
		{"small gradients keep 11 bits", []float32{3e-7, -1.1e-9, 7.7e-8, 2.5e-10}, 14 + 22, false},
		{"large values", []float32{1e20, -3e19, 7e17}, 14 - 66, false},
		{"all zero", []float32{0, 0}, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := make([]byte, 2*len(tc.x))
			scale := EncodeF16(b, tc.x)
			if scale != tc.scale {
				t.Errorf("scale %d, want %d", scale, tc.scale)
			}
			got := make([]float32, len(tc.x))
			if err := DecodeF16(got, b, scale); err != nil {
				t.Fatal(err)
			}
			for i, x := range tc.x {
				if tc.exact && got[i] != x {
					t.Errorf("[%d] = %v, want %v exactly", i, got[i], x)
				}
				if d := math.Abs(float64(got[i] - x)); d > math.Abs(float64(x))/2048 {
					t.Errorf("[%d] = %v, want %v within 2^-11", i, got[i], x)
				}
			}
		})
	}
}

// TestEncodeF16Saturates: a finite value never arrives as Inf.
func TestEncodeF16Saturates(t *testing.T) {
	x := []float32{math.MaxFloat32, -math.MaxFloat32, 1}
	b := make([]byte, 6)
	scale := EncodeF16(b, x)
	got := make([]float32, 3)
	if err := DecodeF16(got, b, scale); err != nil {
		t.Fatal(err)
	}
	if !Finite(got) || got[0] <= 0 || got[1] >= 0 {
		t.Fatalf("decoded %v, want finite values of the same signs", got)
	}
}

// topKRef is the reference selection: indexes of the k largest |x| (ties:
// lower index first), zeros excluded, in index order.
func topKRef(x []float32, k int) []int {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		fa, fb := math.Abs(float64(x[a])), math.Abs(float64(x[b]))
		switch {
		case fa > fb:
			return -1
		case fa < fb:
			return 1
		}
		return 0
	})
	var out []int
	for _, i := range idx[:k] {
		if x[i] != 0 {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

func TestTopKPicksLargest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var sel topKSelector
	for _, tc := range []struct {
		name string
		gen  func(i int) float32
		n, k int
	}{
		{"normal", func(int) float32 { return float32(r.NormFloat64()) }, 1000, 10},
		{"one", func(int) float32 { return float32(r.NormFloat64()) }, 1, 1},
		{"all", func(int) float32 { return float32(r.NormFloat64()) }, 33, 33},
		{"ties", func(int) float32 { return float32(r.IntN(5) - 2) }, 500, 77},
		{"mostly zero", func(i int) float32 { return float32(min(i%97, 1)) * float32(r.NormFloat64()) }, 300, 200},
		{"all zero", func(int) float32 { return 0 }, 64, 5},
		{"tiny and huge", func(int) float32 { return float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(70)-35))) }, 5000, 50},
		{"subnormals", func(int) float32 { return f32bits(uint32(r.IntN(1 << 23))) }, 2000, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := make([]float32, tc.n)
			for i := range x {
				x[i] = tc.gen(i)
			}
			want := topKRef(x, tc.k)
			orig := slices.Clone(x)
			buf := make([]byte, topKBytes*tc.k)
			n := sel.encode(buf, x, tc.k)
			got := make([]float32, tc.n)
			if err := DecodeTopK(got, buf[:n]); err != nil {
				t.Fatal(err)
			}
			if n != topKBytes*len(want) {
				t.Fatalf("%d pairs, want %d", n/topKBytes, len(want))
			}
			for j, i := range want {
				if gi := int(buf[j*topKBytes]) | int(buf[j*topKBytes+1])<<8 | int(buf[j*topKBytes+2])<<16; gi != i {
					t.Fatalf("pair %d has index %d, want %d", j, gi, i)
				}
			}
			for i := range orig {
				// what was sent plus what is left is what was there
				if got[i]+x[i] != orig[i] || got[i] != 0 && x[i] != 0 {
					t.Fatalf("[%d]: sent %v, left %v, had %v", i, got[i], x[i], orig[i])
				}
			}
		})
	}
}

func TestDecodeTopKRefuses(t *testing.T) {
	pair := func(i uint32, v float32) []byte {
		b := make([]byte, 8)
		b[0], b[1], b[2], b[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
		u := math.Float32bits(v)
		b[4], b[5], b[6], b[7] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		return b
	}
	for _, tc := range []struct {
		name string
		src  []byte
	}{
		{"index out of range", pair(4, 1)},
		{"repeated index", append(pair(1, 1), pair(1, 2)...)},
		{"decreasing", append(pair(2, 1), pair(1, 2)...)},
		{"odd length", pair(1, 1)[:7]},
		{"more pairs than floats", slices.Concat(pair(0, 1), pair(1, 1), pair(2, 1), pair(3, 1), pair(3, 1))},
		{"huge index", pair(1<<31, 1)},
	} {
		if err := DecodeTopK(make([]float32, 4), tc.src); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", tc.name, err)
		}
	}
}

// TestErrorFeedbackExact: over many steps, what top-k sent plus the final
// residual is the sum of the gradients, exactly (gradients are multiples
// of 2^-10 below 2^10, so float32 sums of them are exact). A push that is
// not accepted leaves the residual as it was.
func TestErrorFeedbackExact(t *testing.T) {
	const n, steps = 3000, 40
	parts := []Part{{ID: 0, Kind: Param, Len: 1000}, {ID: 1, Kind: State, Len: 7, Flat: 1000}, {ID: 2, Kind: Param, Len: 2000, Flat: 1007}}
	comp := Compression{Encoding: EncodingTopK, TopK: 0.03}
	chunk := 512
	r := rand.New(rand.NewPCG(3, 4))
	var e encoder
	sum := make([]float64, n+7)  // of the gradients, by flat index
	sent := make([]float64, n+7) // of what the server was sent and accepted
	for step := range steps {
		e.prepare(comp, parts, chunk)
		accepted := step%5 != 3
		used := 0
		for _, p := range parts {
			if p.Kind != Param {
				continue
			}
			g := make([]float32, p.Len)
			for i := range g {
				g[i] = float32(r.IntN(1<<16)-1<<15) / 1024 * float32(r.IntN(2))
			}
			for off := 0; off < p.Len; off += chunk {
				m := min(chunk, p.Len-off)
				var ch Chunk
				used += e.encode(&ch, comp, g[off:off+m], p.Flat+off, used)
				if k := TopKCount(m, comp.TopK); ch.Len() != m || len(ch.Payload) > topKBytes*k {
					t.Fatalf("chunk of %d floats with %d bytes, want at most %d pairs", ch.Len(), len(ch.Payload), k)
				}
				dec := make([]float32, m)
				if err := ch.Decode(dec); err != nil {
					t.Fatal(err)
				}
				if accepted {
					for i, v := range g[off : off+m] {
						sum[p.Flat+off+i] += float64(v)
						sent[p.Flat+off+i] += float64(dec[i])
					}
				}
			}
		}
		if accepted {
			e.residual, e.next = e.next, e.residual // what sendTo does on acceptance
		}
	}
	for i := range sum {
		if got := sent[i] + float64(e.residual[i]); got != sum[i] {
			t.Fatalf("[%d]: sent %v + residual %v = %v, want %v", i, sent[i], e.residual[i], got, sum[i])
		}
	}
}

func TestChunkEncodings(t *testing.T) {
	x := []float32{0.5, -3, 1e-4, 0, 7, 2}
	var sel topKSelector
	for _, tc := range []struct {
		name string
		enc  Encoding
		want []float32
	}{
		{"fp16", EncodingFloat16, []float32{0.5, -3, F32(F16(1e-4*4096)) / 4096, 0, 7, 2}}, // scale 12
		{"topk", EncodingTopK, []float32{0, -3, 0, 0, 7, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := sampleChunk()
			c.Encoding, c.Count = tc.enc, len(x)
			b := make([]byte, 4*len(x))
			if tc.enc == EncodingFloat16 {
				c.Scale = EncodeF16(b, x)
				c.Payload = b[:2*len(x)]
			} else {
				c.Payload = b[:sel.encode(b, slices.Clone(x), 2)]
			}
			wire := encode(t, c)
			var got Chunk
			if err := got.unmarshal(split(wire, 5)); err != nil {
				t.Fatal(err)
			}
			dst := make([]float32, got.Len())
			if err := got.Decode(dst); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(dst, tc.want) {
				t.Errorf("decoded %v, want %v", dst, tc.want)
			}
			// a truncated payload is refused
			if err := new(Chunk).unmarshal(oneBuffer(wire[:len(wire)-1])); !errors.Is(err, ErrTruncated) {
				t.Errorf("truncated: got %v, want ErrTruncated", err)
			}
		})
	}
}

// TestEncodeF16IsF16: EncodeF16's inlined fast path is F16 of the scaled
// value (saturated), on values around every binade and its edges.
func TestEncodeF16IsF16(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var x []float32
	for e := -160; e <= 130; e++ {
		for range 40 {
			v := float32(math.Ldexp(1+r.Float64(), e))
			x = append(x, v, -v, math.Nextafter32(v, 0))
		}
		x = append(x, float32(math.Ldexp(1, e)), float32(math.Ldexp(1.5, e)))
	}
	x = append(x, 0, float32(math.Copysign(0, -1)), math.MaxFloat32, -math.MaxFloat32)
	for _, scale := range []int{0, 14, -maxScale, maxScale, 100, -37} {
		m := pow2(scale)
		b := make([]byte, 2*len(x))
		encodeF16With(b, x, m)
		for i, v := range x {
			want := F16(v * m)
			if want&0x7fff == 0x7c00 && !math.IsInf(float64(v*m), 0) {
				want = want&0x8000 | 0x7bff
			}
			if got := uint16(b[2*i]) | uint16(b[2*i+1])<<8; got != want {
				t.Fatalf("scale %d: %v encodes as %#04x, want %#04x", scale, v, got, want)
			}
		}
	}
}
