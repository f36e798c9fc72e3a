package input

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

var (
	testMean = []float32{0.485, 0.456, 0.406, 0.5}
	testStd  = []float32{0.229, 0.224, 0.225, 0.25}
)

// randImage returns an h×w×c image of random bytes.
func randImage(h, w, c int, seed uint64) []uint8 {
	rng := rand.New(rand.NewPCG(seed, 0))
	img := make([]uint8, h*w*c)
	for i := range img {
		img[i] = uint8(rng.UintN(256))
	}
	return img
}

func normalized(src []uint8, h, w, c int) []float32 {
	dst := make([]float32, h*w*c)
	Normalize(dst, src, h, w, c, testMean, testStd)
	return dst
}

// at returns CHW element (ch, y, x).
func at(img []float32, h, w, ch, y, x int) float32 { return img[(ch*h+y)*w+x] }

func TestNormalize(t *testing.T) {
	const h, w, c = 3, 4, 3
	src := randImage(h, w, c, 1)
	dst := normalized(src, h, w, c)
	for y := range h {
		for x := range w {
			for ch := range c {
				want := (float64(src[(y*w+x)*c+ch])/255 - float64(testMean[ch])) / float64(testStd[ch])
				if got := at(dst, h, w, ch, y, x); math.Abs(float64(got)-want) > 1e-6 {
					t.Errorf("(%d,%d,%d) = %v, want %v", ch, y, x, got, want)
				}
			}
		}
	}
}

func TestNormalizePanics(t *testing.T) {
	tests := []struct {
		name    string
		dst     int
		src     int
		c       int
		meanStd int
	}{
		{"short dst", 11, 12, 3, 3},
		{"short src", 12, 11, 3, 3},
		{"too many channels", 20, 20, 5, 5},
		{"short mean", 12, 12, 3, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			ms := make([]float32, tt.meanStd)
			Normalize(make([]float32, tt.dst), make([]uint8, tt.src), 2, 2, tt.c, ms, ms)
		})
	}
}

func TestDisabledAndIdentityEqualNormalize(t *testing.T) {
	const h, w, c = 9, 7, 3
	src := randImage(h, w, c, 2)
	want := normalized(src, h, w, c)
	disabled := DefaultAugment()
	disabled.Enabled = false
	tests := []struct {
		name string
		a    Augment
	}{
		{"disabled", disabled},
		{"enabled, all ranges zero", Augment{Enabled: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make([]float32, h*w*c)
			for seed := range uint64(20) {
				tt.a.Apply(got, src, h, w, c, testMean, testStd, seed)
				if !slices.Equal(got, want) {
					t.Fatalf("seed %d: Apply differs from Normalize", seed)
				}
			}
		})
	}
}

// expectMap checks dst(ch, y, x) == Normalize(src)(ch, fy(y,x), fx(y,x)),
// within tol.
func expectMap(t *testing.T, dst []float32, src []uint8, h, w, c int, tol float64, from func(y, x int) (int, int)) {
	t.Helper()
	ref := normalized(src, h, w, c)
	for ch := range c {
		for y := range h {
			for x := range w {
				sy, sx := from(y, x)
				got, want := at(dst, h, w, ch, y, x), at(ref, h, w, ch, sy, sx)
				if math.Abs(float64(got-want)) > tol {
					t.Fatalf("(%d,%d,%d) = %v, want source (%d,%d) = %v", ch, y, x, got, sy, sx, want)
				}
			}
		}
	}
}

func clamp(v, hi int) int { return min(max(v, 0), hi) }

func TestWarpExact(t *testing.T) {
	const h, w, c = 6, 5, 3
	src := randImage(h, w, c, 3)
	tests := []struct {
		name string
		t    transform
		from func(y, x int) (int, int)
	}{
		{"flip", transform{zoomRows: 1, zoomCols: 1, flip: true},
			func(y, x int) (int, int) { return y, w - 1 - x }},
		// The map is output -> input: a +2 column shift reads 2 to the
		// right, so content moves left, and the right edge repeats.
		{"shift", transform{zoomRows: 1, zoomCols: 1, shiftRows: -1, shiftCols: 2},
			func(y, x int) (int, int) { return clamp(y-1, h-1), clamp(x+2, w-1) }},
		{"shift past the edge fills nearest", transform{zoomRows: 1, zoomCols: 1, shiftCols: 40},
			func(y, x int) (int, int) { return y, w - 1 }},
		{"shift then flip", transform{zoomRows: 1, zoomCols: 1, shiftCols: 1, flip: true},
			func(y, x int) (int, int) { return y, clamp(w-1-x+1, w-1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]float32, h*w*c)
			warp(dst, src, h, w, c, testMean, testStd, tt.t)
			expectMap(t, dst, src, h, w, c, 0, tt.from)
		})
	}
}

func TestWarpRotate90(t *testing.T) {
	// On an odd-sized image the centre is a pixel, so a quarter turn maps
	// pixels onto pixels: the output's top row is the input's left column
	// read bottom to top (a clockwise turn on screen for theta = +90).
	const h, w, c = 5, 5, 3
	src := randImage(h, w, c, 4)
	dst := make([]float32, h*w*c)
	warp(dst, src, h, w, c, testMean, testStd, transform{theta: 90, zoomRows: 1, zoomCols: 1})
	// cos 90° is 6e-17, not 0, but rounds to 0 in fixed point: exact.
	expectMap(t, dst, src, h, w, c, 0, func(y, x int) (int, int) { return h - 1 - x, y })

	warp(dst, src, h, w, c, testMean, testStd, transform{theta: -90, zoomRows: 1, zoomCols: 1})
	expectMap(t, dst, src, h, w, c, 0, func(y, x int) (int, int) { return x, w - 1 - y })
}

func TestWarpBilinear(t *testing.T) {
	// Zoom 0.5 about the centre (2, 2) of a 5×5 image reads input
	// (2 + (y−2)/2, 2 + (x−2)/2): pixel (0,0) reads (1,1) and pixel (1,1)
	// reads (1.5,1.5), the mean of four pixels.
	const h, w, c = 5, 5, 1
	src := make([]uint8, h*w)
	for i := range src {
		src[i] = uint8(10 * i)
	}
	dst := make([]float32, h*w)
	one, zero := []float32{1}, []float32{0}
	warp(dst, src, h, w, c, zero, one, transform{zoomRows: 0.5, zoomCols: 0.5})
	tests := []struct {
		y, x int
		want float64
	}{
		{0, 0, 60},                          // src(1,1)
		{1, 1, (60 + 70 + 110 + 120) / 4.0}, // src(1.5,1.5)
		{2, 2, 120},                         // the centre stays
		{2, 3, (120 + 130) / 2.0},           // src(2,2.5)
	}
	for _, tt := range tests {
		if got := float64(dst[tt.y*w+tt.x]) * 255; math.Abs(got-tt.want) > 1e-3 {
			t.Errorf("(%d,%d) = %v, want %v", tt.y, tt.x, got, tt.want)
		}
	}
}

// referenceWarp is warp in float64: the same matrix, exact bilinear
// sampling with clamped coordinates, no fixed point.
func referenceWarp(src []uint8, h, w, c int, t transform) []float32 {
	t.h, t.w = h, w
	m := t.matrix()
	out := make([]float32, h*w*c)
	px := func(r, col, ch int) float64 { return float64(src[(r*w+col)*c+ch]) }
	for y := range h {
		for x := range w {
			sr := min(max(m[0][0]*float64(y)+m[0][1]*float64(x)+m[0][2], 0), float64(h-1))
			sc := min(max(m[1][0]*float64(y)+m[1][1]*float64(x)+m[1][2], 0), float64(w-1))
			r0, c0 := int(sr), int(sc)
			r1, c1 := min(r0+1, h-1), min(c0+1, w-1)
			fr, fc := sr-float64(r0), sc-float64(c0)
			for ch := range c {
				v := (1-fr)*((1-fc)*px(r0, c0, ch)+fc*px(r0, c1, ch)) + fr*((1-fc)*px(r1, c0, ch)+fc*px(r1, c1, ch))
				out[(ch*h+y)*w+x] = float32((v/255 - float64(testMean[ch])) / float64(testStd[ch]))
			}
		}
	}
	return out
}

func TestWarpMatchesFloatReference(t *testing.T) {
	const h, w = 13, 10
	a := DefaultAugment()
	a.RotationRange, a.ShearRange = 180, 45 // large, to exercise every part
	for _, c := range []int{3, 1, 4} {
		src := randImage(h, w, c, uint64(c))
		got := make([]float32, h*w*c)
		for seed := range uint64(50) {
			tr := a.draw(seed, h, w)
			warp(got, src, h, w, c, testMean, testStd, tr)
			want := referenceWarp(src, h, w, c, tr)
			for i := range got {
				// Fixed-point sampling is within half a grey level.
				std := float64(testStd[i/(h*w)])
				if d := math.Abs(float64(got[i]-want[i])) * 255 * std; d > 0.5 {
					t.Fatalf("c=%d seed %d %+v: value %d = %v, float reference %v (%.2f grey levels)",
						c, seed, tr, i, got[i], want[i], d)
				}
			}
		}
	}
}

func TestWarp3MatchesGeneric(t *testing.T) {
	const h, w, c = 17, 12, 3
	src := randImage(h, w, c, 8)
	a := DefaultAugment()
	fast := make([]float32, h*w*c)
	slow := make([]float32, h*w*c)
	for seed := range uint64(20) {
		tr := a.draw(seed, h, w)
		tr.h, tr.w = h, w
		m := tr.matrix()
		fm := newFixedMap(&m, h, w)
		norm := newAffine(c, testMean, testStd)
		warp3(fast, src, h, w, &norm, &fm)
		warpN(slow, src, h, w, c, &norm, &fm)
		if !slices.Equal(fast, slow) {
			t.Fatalf("seed %d: warp3 and warpN differ", seed)
		}
	}
}

func TestApplyDeterministic(t *testing.T) {
	const h, w, c = 16, 16, 3
	src := randImage(h, w, c, 5)
	a := DefaultAugment()
	first := make([]float32, h*w*c)
	again := make([]float32, h*w*c)
	a.Apply(first, src, h, w, c, testMean, testStd, 42)
	a.Apply(again, src, h, w, c, testMean, testStd, 42)
	if !slices.Equal(first, again) {
		t.Fatal("same seed, different output")
	}
	seen := [][]float32{first}
	for seed := range uint64(20) {
		out := make([]float32, h*w*c)
		a.Apply(out, src, h, w, c, testMean, testStd, 1000+seed)
		for i, prev := range seen {
			if slices.Equal(out, prev) {
				t.Fatalf("seed %d gives the same output as draw %d", 1000+seed, i)
			}
		}
		seen = append(seen, out)
	}
}

func TestDrawWithinRanges(t *testing.T) {
	const h, w = 40, 60
	a := DefaultAugment()
	a.RotationRange = 30 // distinct from the others, to catch a mix-up
	var lo, hi transform
	lo = transform{theta: math.Inf(1), shiftRows: math.Inf(1), shiftCols: math.Inf(1), shear: math.Inf(1), zoomRows: math.Inf(1), zoomCols: math.Inf(1)}
	hi = transform{theta: math.Inf(-1), shiftRows: math.Inf(-1), shiftCols: math.Inf(-1), shear: math.Inf(-1), zoomRows: math.Inf(-1), zoomCols: math.Inf(-1)}
	flips := 0
	const draws = 5000
	for i := range uint64(draws) {
		d := a.draw(SampleSeed(7, 0, i), h, w)
		lo = transform{min(lo.theta, d.theta), min(lo.shiftRows, d.shiftRows), min(lo.shiftCols, d.shiftCols), min(lo.shear, d.shear), min(lo.zoomRows, d.zoomRows), min(lo.zoomCols, d.zoomCols), false, 0, 0}
		hi = transform{max(hi.theta, d.theta), max(hi.shiftRows, d.shiftRows), max(hi.shiftCols, d.shiftCols), max(hi.shear, d.shear), max(hi.zoomRows, d.zoomRows), max(hi.zoomCols, d.zoomCols), false, 0, 0}
		if d.flip {
			flips++
		}
	}
	tests := []struct {
		name                 string
		lo, hi, limLo, limHi float64
	}{
		{"theta", lo.theta, hi.theta, -30, 30},
		{"row shift", lo.shiftRows, hi.shiftRows, -0.1 * h, 0.1 * h},
		{"col shift", lo.shiftCols, hi.shiftCols, -0.1 * w, 0.1 * w},
		{"shear", lo.shear, hi.shear, -0.2, 0.2},
		{"row zoom", lo.zoomRows, hi.zoomRows, 0.8, 1.2},
		{"col zoom", lo.zoomCols, hi.zoomCols, 0.8, 1.2},
	}
	for _, tt := range tests {
		span := tt.limHi - tt.limLo
		if tt.lo < tt.limLo || tt.hi > tt.limHi {
			t.Errorf("%s drawn in [%v, %v], outside [%v, %v]", tt.name, tt.lo, tt.hi, tt.limLo, tt.limHi)
		}
		// Over 5000 uniform draws both ends are within 1% of the span.
		if tt.lo > tt.limLo+0.01*span || tt.hi < tt.limHi-0.01*span {
			t.Errorf("%s drawn in [%v, %v], does not fill [%v, %v]", tt.name, tt.lo, tt.hi, tt.limLo, tt.limHi)
		}
	}
	if flips < draws*45/100 || flips > draws*55/100 {
		t.Errorf("%d flips in %d draws, want about half", flips, draws)
	}
	a.HorizontalFlip = false
	for i := range uint64(100) {
		if a.draw(i, h, w).flip {
			t.Fatal("flip drawn with HorizontalFlip off")
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Augment)
		ok     bool
	}{
		{"default", func(*Augment) {}, true},
		{"zero", func(a *Augment) { *a = Augment{} }, true},
		{"half turn", func(a *Augment) { a.RotationRange = 180 }, true},
		{"negative rotation", func(a *Augment) { a.RotationRange = -1 }, false},
		{"rotation over 180", func(a *Augment) { a.RotationRange = 181 }, false},
		{"NaN shear", func(a *Augment) { a.ShearRange = math.NaN() }, false},
		{"shear 90", func(a *Augment) { a.ShearRange = 90 }, false},
		{"width shift 1", func(a *Augment) { a.WidthShiftRange = 1 }, false},
		{"height shift negative", func(a *Augment) { a.HeightShiftRange = -0.1 }, false},
		{"zoom 1", func(a *Augment) { a.ZoomRange = 1 }, false},
		{"zoom inf", func(a *Augment) { a.ZoomRange = math.Inf(1) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := DefaultAugment()
			tt.modify(&a)
			err := a.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrAugment) {
				t.Errorf("error %v does not wrap ErrAugment", err)
			}
		})
	}
}

func TestApplyDoesNotAllocate(t *testing.T) {
	const h, w, c = 64, 64, 3
	src := randImage(h, w, c, 6)
	dst := make([]float32, h*w*c)
	a := DefaultAugment()
	seed := uint64(0)
	if n := testing.AllocsPerRun(20, func() {
		seed++
		a.Apply(dst, src, h, w, c, testMean, testStd, seed)
	}); n != 0 {
		t.Errorf("Apply allocates %v times per call", n)
	}
}

func TestSampleSeed(t *testing.T) {
	seen := map[uint64][3]uint64{}
	for run := range uint64(3) {
		for epoch := range 20 {
			for rec := range uint64(500) {
				s := SampleSeed(run, epoch, rec)
				if prev, ok := seen[s]; ok {
					t.Fatalf("SampleSeed(%d, %d, %d) = SampleSeed%v", run, epoch, rec, prev)
				}
				seen[s] = [3]uint64{run, uint64(epoch), rec}
			}
		}
	}
	// Neighbouring inputs should differ in about half the bits.
	var bits int
	for rec := range uint64(1000) {
		x := SampleSeed(9, 1, rec) ^ SampleSeed(9, 1, rec+1)
		for ; x != 0; x &= x - 1 {
			bits++
		}
	}
	if avg := float64(bits) / 1000; avg < 30 || avg > 34 {
		t.Errorf("neighbouring record ids differ in %.1f bits on average, want about 32", avg)
	}
}

func BenchmarkAugment64(b *testing.B) {
	const h, w, c = 64, 64, 3
	src := randImage(h, w, c, 7)
	dst := make([]float32, h*w*c)
	a := DefaultAugment()
	b.ReportAllocs()
	b.SetBytes(h * w * c)
	var seed uint64
	for b.Loop() {
		seed++
		a.Apply(dst, src, h, w, c, testMean, testStd, seed)
	}
}

func BenchmarkNormalize64(b *testing.B) {
	const h, w, c = 64, 64, 3
	src := randImage(h, w, c, 7)
	dst := make([]float32, h*w*c)
	b.SetBytes(h * w * c)
	for b.Loop() {
		Normalize(dst, src, h, w, c, testMean, testStd)
	}
}
