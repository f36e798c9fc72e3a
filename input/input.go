// Package input turns records into batches: stored images are uint8 HWC
// (rows, columns, channels) and the net takes float32 CHW, scaled to [0, 1]
// and normalised per channel. Augment adds the random geometric
// augmentation of Keras' ImageDataGenerator, drawn from a seed so that it is
// a pure function of (run seed, epoch, record id); see SampleSeed. Order is
// the epoch's permutation of a split and FillBatch writes a batch's inputs
// and targets: the single-process trainer and the cluster's coordinator and
// workers all use them, so every process feeds the net the same numbers.
package input

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// MaxChannels is the most channels Normalize and Augment.Apply accept.
const MaxChannels = 4

// ErrAugment is wrapped by the errors of Augment.Validate.
var ErrAugment = errors.New("input: invalid augmentation")

// affine coefficients, per channel: out = float32(v*scale) + bias, with
// scale = 1/(255·std) and bias = −mean/std, i.e. (v/255 − mean)/std.
type affine struct {
	scale, bias [MaxChannels]float32
}

func newAffine(c int, mean, std []float32) affine {
	if c < 1 || c > MaxChannels {
		panic(fmt.Sprintf("input: %d channels, want 1..%d", c, MaxChannels))
	}
	if len(mean) < c || len(std) < c {
		panic(fmt.Sprintf("input: %d channels but %d means and %d stds", c, len(mean), len(std)))
	}
	var a affine
	for i := range c {
		a.scale[i] = 1 / (255 * std[i])
		a.bias[i] = -mean[i] / std[i]
	}
	return a
}

// at normalises value v of channel ch. The conversion stops the compiler
// from fusing the multiply and add, so every path rounds the same way.
func (a *affine) at(ch int, v float32) float32 { return float32(v*a.scale[ch]) + a.bias[ch] }

func checkSizes(dst []float32, src []uint8, h, w, c int) {
	if h < 1 || w < 1 {
		panic(fmt.Sprintf("input: image size %dx%d", h, w))
	}
	if n := h * w * c; len(src) < n || len(dst) < n {
		panic(fmt.Sprintf("input: %dx%dx%d image needs %d values; src has %d, dst %d", h, w, c, n, len(src), len(dst)))
	}
}

// Normalize writes the h×w×c image src (HWC) to dst as CHW float32,
// (x/255 − mean[ch]) / std[ch] (computed as x·(1/(255·std)) − mean/std, so
// within a rounding of the formula). It panics if a slice is too short or c
// is not in 1..MaxChannels.
func Normalize(dst []float32, src []uint8, h, w, c int, mean, std []float32) {
	checkSizes(dst, src, h, w, c)
	a := newAffine(c, mean, std)
	hw := h * w
	for ch := range c {
		plane := dst[ch*hw : ch*hw+hw]
		for i := range plane {
			plane[i] = a.at(ch, float32(src[i*c+ch]))
		}
	}
}

// Augment is the random geometric augmentation of Keras' ImageDataGenerator,
// with fill_mode="nearest" and bilinear sampling. The zero value (or
// Enabled=false) does nothing.
type Augment struct {
	Enabled bool `json:"enabled"`
	// RotationRange: the rotation angle is uniform in ±RotationRange degrees.
	RotationRange float64 `json:"rotation_range"`
	// WidthShiftRange, HeightShiftRange: the shift is uniform in ±range, as a
	// fraction of the width or height.
	WidthShiftRange  float64 `json:"width_shift_range"`
	HeightShiftRange float64 `json:"height_shift_range"`
	// ShearRange: the shear angle is uniform in ±ShearRange degrees (Keras:
	// "shear angle in counter-clockwise direction in degrees").
	ShearRange float64 `json:"shear_range"`
	// ZoomRange: the zoom factors for rows and for columns are drawn
	// independently, each uniform in [1−ZoomRange, 1+ZoomRange]. As in
	// Keras, a factor above 1 samples a larger area, so the content shrinks.
	ZoomRange float64 `json:"zoom_range"`
	// HorizontalFlip mirrors left-right with probability 1/2, after the
	// other transforms (as Keras does).
	HorizontalFlip bool `json:"horizontal_flip"`
}

// DefaultAugment returns the settings of the original tutorial:
// rotation_range=25, width_shift_range=0.1, height_shift_range=0.1,
// shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
// fill_mode="nearest".
func DefaultAugment() Augment {
	return Augment{
		Enabled:          true,
		RotationRange:    25,
		WidthShiftRange:  0.1,
		HeightShiftRange: 0.1,
		ShearRange:       0.2,
		ZoomRange:        0.2,
		HorizontalFlip:   true,
	}
}

// Validate reports a range that is negative, not finite, or too large to
// keep the transform invertible and the image in view.
func (a Augment) Validate() error {
	checks := []struct {
		name  string
		v     float64
		limit float64 // exclusive unless inclusive
		incl  bool
	}{
		{"rotation range", a.RotationRange, 180, true},
		{"width shift range", a.WidthShiftRange, 1, false},
		{"height shift range", a.HeightShiftRange, 1, false},
		{"shear range", a.ShearRange, 90, false},
		{"zoom range", a.ZoomRange, 1, false},
	}
	for _, c := range checks {
		if math.IsNaN(c.v) || c.v < 0 || c.v > c.limit || (c.v == c.limit && !c.incl) {
			end := ")"
			if c.incl {
				end = "]"
			}
			return fmt.Errorf("%s %g outside [0, %g%s: %w", c.name, c.v, c.limit, end, ErrAugment)
		}
	}
	return nil
}

// pcgStream is the second PCG word; the seed is the first.
const pcgStream = 0x6a09e667f3bcc909

// transform is one draw of the augmentation. Rows and columns are named
// explicitly: Keras calls the row shift tx and the row zoom zx.
type transform struct {
	theta     float64 // rotation, degrees
	shiftRows float64 // pixels
	shiftCols float64 // pixels
	shear     float64 // degrees
	zoomRows  float64
	zoomCols  float64
	flip      bool
	h, w      int // image size, for the centre and the flip
}

// uniform returns a float64 in [0, 1) from the top 53 bits of x.
func uniform(x uint64) float64 { return float64(x>>11) * 0x1p-53 }

// draw returns the transform for seed. It always draws all seven values, in
// Keras' order, so each parameter's value does not depend on whether the
// others are enabled.
func (a Augment) draw(seed uint64, h, w int) transform {
	p := rand.NewPCG(seed, pcgStream)
	sym := func(r float64) float64 { return (2*uniform(p.Uint64()) - 1) * r }
	t := transform{h: h, w: w}
	t.theta = sym(a.RotationRange)
	t.shiftRows = sym(a.HeightShiftRange) * float64(h)
	t.shiftCols = sym(a.WidthShiftRange) * float64(w)
	t.shear = sym(a.ShearRange)
	t.zoomRows = 1 + sym(a.ZoomRange)
	t.zoomCols = 1 + sym(a.ZoomRange)
	t.flip = p.Uint64()>>63 == 1 && a.HorizontalFlip
	return t
}

// mat3 is a 3×3 homogeneous matrix acting on (row, col, 1).
type mat3 [3][3]float64

func (a mat3) mul(b mat3) mat3 {
	var m mat3
	for i := range 3 {
		for j := range 3 {
			m[i][j] = float64(a[i][0]*b[0][j]) + float64(a[i][1]*b[1][j]) + float64(a[i][2]*b[2][j])
		}
	}
	return m
}

// matrix returns the map from output (row, col) to input (row, col), as
// Keras' apply_affine_transform builds it: rotation · shift · shear · zoom,
// about the image centre ((h−1)/2, (w−1)/2), then the horizontal flip of the
// output.
func (t transform) matrix() mat3 {
	id := mat3{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}
	m := id
	if t.theta != 0 {
		s, c := math.Sincos(t.theta * math.Pi / 180)
		m = m.mul(mat3{{c, -s, 0}, {s, c, 0}, {0, 0, 1}})
	}
	m = m.mul(mat3{{1, 0, t.shiftRows}, {0, 1, t.shiftCols}, {0, 0, 1}})
	if t.shear != 0 {
		s, c := math.Sincos(t.shear * math.Pi / 180)
		m = m.mul(mat3{{1, -s, 0}, {0, c, 0}, {0, 0, 1}})
	}
	m = m.mul(mat3{{t.zoomRows, 0, 0}, {0, t.zoomCols, 0}, {0, 0, 1}})
	or, oc := float64(t.h)/2-0.5, float64(t.w)/2-0.5
	m = mat3{{1, 0, or}, {0, 1, oc}, {0, 0, 1}}.mul(m).mul(mat3{{1, 0, -or}, {0, 1, -oc}, {0, 0, 1}})
	if t.flip {
		m = m.mul(mat3{{1, 0, 0}, {0, -1, float64(t.w - 1)}, {0, 0, 1}})
	}
	return m
}

// Apply writes src (h×w×c, HWC) to dst as normalised CHW float32, like
// Normalize, after a random transform drawn from seed alone (see
// SampleSeed). With a.Enabled false it is Normalize. It samples bilinearly
// (to 1/1024 pixel), repeats the edge pixels outside the image
// (fill_mode="nearest"), runs in one pass and does not allocate. It panics
// where Normalize does; it does not validate a (call Validate once).
func (a Augment) Apply(dst []float32, src []uint8, h, w, c int, mean, std []float32, seed uint64) {
	if !a.Enabled {
		Normalize(dst, src, h, w, c, mean, std)
		return
	}
	warp(dst, src, h, w, c, mean, std, a.draw(seed, h, w))
}

// Sampling is in fixed point. The affine map is converted once per image to
// integers with 32 fractional bits, and the inner loops step through source
// coordinates by integer addition. A coordinate is rounded to 1/2^fracBits
// of a pixel, and the four bilinear weights are integers summing to
// 2^(2·fracBits). That is cheaper than float sampling, exact for integral
// maps (identity, flips, integer shifts, quarter turns), off by at most a
// quarter of a grey level elsewhere, and, past the per-image matrix, pure
// integer arithmetic that every platform does alike.
const (
	fracBits  = 10
	coordBits = 32
	coordOne  = int64(1) << coordBits
	// unit converts a weighted sum back to grey levels.
	unit = 1.0 / (1 << (2 * fracBits))
)

// fixedMap is the output→input map in coordBits fixed point: source row
// r = r0 + y·rY + x·rX, column c = c0 + y·cY + x·cX.
type fixedMap struct {
	r0, rY, rX, c0, cY, cX int64
	lastR, lastC           int // h−1, w−1
}

func toFixed(v float64) int64 { return int64(math.Round(v * float64(coordOne))) }

func newFixedMap(m *mat3, h, w int) fixedMap {
	return fixedMap{
		r0: toFixed(m[0][2]), rY: toFixed(m[0][0]), rX: toFixed(m[0][1]),
		c0: toFixed(m[1][2]), cY: toFixed(m[1][0]), cX: toFixed(m[1][1]),
		lastR: h - 1, lastC: w - 1,
	}
}

// split clamps fixed-point coordinate s to [0, last] (nearest fill) and
// splits it into neighbouring indices i0, i1 and the weight f of i1.
func split(s int64, last int) (i0, i1 int, f int32) {
	if s <= 0 {
		return 0, 0, 0
	}
	q := (s + 1<<(coordBits-fracBits-1)) >> (coordBits - fracBits) // rounded
	i0 = int(q >> fracBits)
	if i0 >= last {
		return last, last, 0
	}
	return i0, i0 + 1, int32(q & (1<<fracBits - 1))
}

// warp applies t to src and normalises into dst.
func warp(dst []float32, src []uint8, h, w, c int, mean, std []float32, t transform) {
	checkSizes(dst, src, h, w, c)
	norm := newAffine(c, mean, std)
	t.h, t.w = h, w
	m := t.matrix()
	fm := newFixedMap(&m, h, w)
	if c == 3 {
		warp3(dst, src, h, w, &norm, &fm)
		return
	}
	warpN(dst, src, h, w, c, &norm, &fm)
}

// warp3 is warpN for three channels, the common case, unrolled.
func warp3(dst []float32, src []uint8, h, w int, norm *affine, fm *fixedMap) {
	hw := h * w
	d0, d1, d2 := dst[:hw], dst[hw:2*hw], dst[2*hw:3*hw]
	src = src[:hw*3]
	// scale·unit is exact (a power-of-two factor), so integral maps give
	// exactly Normalize's values.
	s0, s1, s2 := norm.scale[0]*unit, norm.scale[1]*unit, norm.scale[2]*unit
	b0, b1, b2 := norm.bias[0], norm.bias[1], norm.bias[2]
	stride := w * 3
	for y := range h {
		sr := fm.r0 + int64(y)*fm.rY
		sc := fm.c0 + int64(y)*fm.cY
		o := y * w
		for x := 0; x < w; x, sr, sc = x+1, sr+fm.rX, sc+fm.cX {
			r0, r1, wr := split(sr, fm.lastR)
			c0, c1, wc := split(sc, fm.lastC)
			w11 := wr * wc
			w10 := wr<<fracBits - w11
			w01 := wc<<fracBits - w11
			w00 := 1<<(2*fracBits) - w01 - w10 - w11
			top, bot := r0*stride, r1*stride
			i00, i01, i10, i11 := top+c0*3, top+c1*3, bot+c0*3, bot+c1*3
			// One bounds check per pixel instead of one per byte.
			p00, p01 := src[i00:i00+3:i00+3], src[i01:i01+3:i01+3]
			p10, p11 := src[i10:i10+3:i10+3], src[i11:i11+3:i11+3]
			v0 := int32(p00[0])*w00 + int32(p01[0])*w01 + int32(p10[0])*w10 + int32(p11[0])*w11
			v1 := int32(p00[1])*w00 + int32(p01[1])*w01 + int32(p10[1])*w10 + int32(p11[1])*w11
			v2 := int32(p00[2])*w00 + int32(p01[2])*w01 + int32(p10[2])*w10 + int32(p11[2])*w11
			d0[o+x] = float32(float32(v0)*s0) + b0
			d1[o+x] = float32(float32(v1)*s1) + b1
			d2[o+x] = float32(float32(v2)*s2) + b2
		}
	}
}

// warpN samples any number of channels.
func warpN(dst []float32, src []uint8, h, w, c int, norm *affine, fm *fixedMap) {
	hw := h * w
	var scale [MaxChannels]float32
	for ch := range c {
		scale[ch] = norm.scale[ch] * unit
	}
	for y := range h {
		sr := fm.r0 + int64(y)*fm.rY
		sc := fm.c0 + int64(y)*fm.cY
		for x := 0; x < w; x, sr, sc = x+1, sr+fm.rX, sc+fm.cX {
			r0, r1, wr := split(sr, fm.lastR)
			c0, c1, wc := split(sc, fm.lastC)
			w11 := wr * wc
			w10 := wr<<fracBits - w11
			w01 := wc<<fracBits - w11
			w00 := 1<<(2*fracBits) - w01 - w10 - w11
			i00, i01 := (r0*w+c0)*c, (r0*w+c1)*c
			i10, i11 := (r1*w+c0)*c, (r1*w+c1)*c
			for ch := range c {
				v := int32(src[i00+ch])*w00 + int32(src[i01+ch])*w01 +
					int32(src[i10+ch])*w10 + int32(src[i11+ch])*w11
				dst[ch*hw+y*w+x] = float32(float32(v)*scale[ch]) + norm.bias[ch]
			}
		}
	}
}

// SampleSeed returns the augmentation seed of record recordID in epoch of
// the run seeded runSeed: a splitmix64 chain over the three, so that
// augmentation is a pure function of them and a resumed run replays it.
func SampleSeed(runSeed uint64, epoch int, recordID uint64) uint64 {
	const domain = 0x61756720696e7075 // "aug inpu": keeps these seeds apart from other uses of runSeed
	s := splitmix64(runSeed ^ domain)
	s = splitmix64(s ^ uint64(epoch))
	return splitmix64(s ^ recordID)
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
