// Package plot draws line charts (training curves) to PNG in pure Go: axes
// with "nice" tick steps, grid lines, a legend, markers, gaps at NaN, and
// several panels side by side.
package plot

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Default panel size in pixels.
const (
	DefaultWidth  = 800
	DefaultHeight = 500
)

// Smallest panel that still has room for the axes.
const (
	minWidth  = 200
	minHeight = 150
)

// ErrNoData is returned for a chart that has no finite point to draw.
var ErrNoData = errors.New("plot: no data")

// Series is one line. X and Y have the same length; a nil X means
// 1, 2, …, len(Y) (epochs). A NaN or infinite Y (or X) leaves a gap.
type Series struct {
	Name string
	X, Y []float64
	// Color is the line colour (drawn opaque); nil means the series' index
	// in Palette, wrapping around.
	Color color.Color
}

// Chart is one panel.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	// Width and Height in pixels; 0 means DefaultWidth, DefaultHeight.
	Width, Height int
}

// Palette holds the default series colours, in order (matplotlib's tab10).
var Palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, // blue
	{0xff, 0x7f, 0x0e, 0xff}, // orange
	{0x2c, 0xa0, 0x2c, 0xff}, // green
	{0xd6, 0x27, 0x28, 0xff}, // red
	{0x94, 0x67, 0xbd, 0xff}, // purple
	{0x8c, 0x56, 0x4b, 0xff}, // brown
	{0xe3, 0x77, 0xc2, 0xff}, // pink
	{0x7f, 0x7f, 0x7f, 0xff}, // grey
	{0xbc, 0xbd, 0x22, 0xff}, // olive
	{0x17, 0xbe, 0xcf, 0xff}, // cyan
}

var (
	white     = color.RGBA{0xff, 0xff, 0xff, 0xff}
	ink       = color.RGBA{0x22, 0x22, 0x22, 0xff}
	frame     = color.RGBA{0x55, 0x55, 0x55, 0xff}
	gridColor = color.RGBA{0xe3, 0xe3, 0xe3, 0xff}
	legendBox = color.RGBA{0xbb, 0xbb, 0xbb, 0xff}
)

// Lines writes c to path as a PNG.
func Lines(path string, c Chart) error { return Panels(path, []Chart{c}) }

// Panels writes the charts side by side to path as a PNG. It writes a
// temporary file in the same directory and renames it, so a reader sees the
// old picture or the new one, never half of one.
func Panels(path string, charts []Chart) error {
	img, err := Render(charts...)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing to remove
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("plot: encode %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// Encode writes the charts side by side to w as a PNG.
func Encode(w io.Writer, charts ...Chart) error {
	img, err := Render(charts...)
	if err != nil {
		return err
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("plot: encode: %w", err)
	}
	return nil
}

// Render draws the charts side by side, top-aligned, on a white image.
func Render(charts ...Chart) (*image.RGBA, error) {
	if len(charts) == 0 {
		return nil, fmt.Errorf("no charts: %w", ErrNoData)
	}
	layouts := make([]*panel, len(charts))
	width, height := 0, 0
	for i, c := range charts {
		p, err := newPanel(c, width)
		if err != nil {
			if c.Title != "" {
				return nil, fmt.Errorf("chart %d (%q): %w", i, c.Title, err)
			}
			return nil, fmt.Errorf("chart %d: %w", i, err)
		}
		layouts[i] = p
		width += p.w
		height = max(height, p.h)
	}
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(white), image.Point{}, draw.Src)
	for _, p := range layouts {
		p.draw(img)
	}
	return img, nil
}

// line is a series ready to draw: finite points in data units, and runs
// (index ranges) of consecutive finite points.
type line struct {
	name   string
	color  color.RGBA
	px, py []float64 // finite points
	runs   [][2]int  // [start, end) into px, py
}

// axis maps data values in [lo, hi] to pixels [p0, p1].
type axis struct {
	lo, hi, step float64
	p0, p1       float64
}

func (a axis) pix(v float64) float64 { return a.p0 + (v-a.lo)/(a.hi-a.lo)*(a.p1-a.p0) }

// ticks returns the multiples of step inside [lo, hi].
func (a axis) ticks() []float64 {
	var out []float64
	first := math.Ceil(a.lo/a.step - 1e-9)
	for k := first; ; k++ {
		v := k * a.step
		if v > a.hi+a.step*1e-9 {
			break
		}
		out = append(out, v)
	}
	return out
}

// panel is one chart, laid out at horizontal offset ox.
type panel struct {
	c          Chart
	ox, w, h   int
	plot       image.Rectangle // the axes' inside
	x, y       axis
	lines      []line
	showLegend bool
}

func newPanel(c Chart, ox int) (*panel, error) {
	p := &panel{c: c, ox: ox, w: c.Width, h: c.Height}
	if p.w == 0 {
		p.w = DefaultWidth
	}
	if p.h == 0 {
		p.h = DefaultHeight
	}
	if p.w < minWidth || p.h < minHeight {
		return nil, fmt.Errorf("plot: size %dx%d is below %dx%d", p.w, p.h, minWidth, minHeight)
	}
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	integralX := true
	for i, s := range c.Series {
		if s.X != nil && len(s.X) != len(s.Y) {
			return nil, fmt.Errorf("plot: series %d (%q) has %d x values and %d y values", i, s.Name, len(s.X), len(s.Y))
		}
		l := line{name: s.Name, color: Palette[i%len(Palette)]}
		if s.Color != nil {
			l.color = color.RGBAModel.Convert(s.Color).(color.RGBA)
			l.color.A = 0xff
		}
		start := 0
		for j, yv := range s.Y {
			xv := float64(j + 1)
			if s.X != nil {
				xv = s.X[j]
			}
			if !finite(xv) || !finite(yv) {
				if len(l.px) > start {
					l.runs = append(l.runs, [2]int{start, len(l.px)})
				}
				start = len(l.px)
				continue
			}
			l.px, l.py = append(l.px, xv), append(l.py, yv)
			xmin, xmax = min(xmin, xv), max(xmax, xv)
			ymin, ymax = min(ymin, yv), max(ymax, yv)
			integralX = integralX && xv == math.Trunc(xv)
		}
		if len(l.px) > start {
			l.runs = append(l.runs, [2]int{start, len(l.px)})
		}
		p.lines = append(p.lines, l)
		p.showLegend = p.showLegend || s.Name != ""
	}
	if math.IsInf(xmin, 1) {
		return nil, ErrNoData
	}

	// Layout: title on top, y tick labels and the rotated y label on the
	// left, x tick labels and the x label below.
	const pad = 8
	top := pad + lineHeight + pad
	if c.Title == "" {
		top = 2 * pad
	}
	bottom := p.h - (pad + lineHeight + 6 + tickLen + pad)
	if c.XLabel != "" {
		bottom -= lineHeight + pad/2
	}
	right := p.w - 3*pad
	p.y = makeAxis(ymin, ymax, float64(bottom), float64(top), (bottom-top)/45, false)
	labelW := 0
	for _, v := range p.y.ticks() {
		labelW = max(labelW, textWidth(formatTick(v, p.y.step)))
	}
	left := pad + labelW + 6 + tickLen
	if c.YLabel != "" {
		left += lineHeight + pad
	}
	p.x = makeAxis(xmin, xmax, float64(left), float64(right), (right-left)/90, integralX)
	p.plot = image.Rect(ox+left, top, ox+right+1, bottom+1)
	p.x.p0, p.x.p1 = p.x.p0+float64(ox), p.x.p1+float64(ox)
	return p, nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// makeAxis pads [lo, hi] by 4% on each side (or widens a single value) and
// picks a nice tick step for about maxTicks ticks.
func makeAxis(lo, hi, p0, p1 float64, maxTicks int, integral bool) axis {
	if lo == hi {
		d := math.Abs(lo) * 0.1
		if d == 0 || integral {
			d = 1
		}
		lo, hi = lo-d, hi+d
	}
	m := (hi - lo) * 0.04
	step := niceStep(hi-lo, max(maxTicks, 2))
	if integral && step < 1 {
		step = 1
	}
	return axis{lo: lo - m, hi: hi + m, step: step, p0: p0, p1: p1}
}

// niceStep returns a tick step of 1, 2, 2.5 or 5 times a power of ten that
// cuts span into at most maxTicks intervals, the finest such step.
func niceStep(span float64, maxTicks int) float64 {
	raw := span / float64(maxTicks)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw*(1-1e-9) {
			return m * mag
		}
	}
	return 10 * mag
}

// formatTick formats tick value v with just enough decimals for step.
func formatTick(v, step float64) string {
	if v == 0 || math.Abs(v) < step*1e-6 {
		return "0"
	}
	if math.Abs(v) >= 1e6 || step < 1e-4 {
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	// Decimals needed by the step's mantissa: 2.5e-1 needs 2, 2e-1 needs 1.
	dec := 0
	for s := step; dec < 10 && math.Abs(s-math.Round(s)) > 1e-9*math.Max(1, s); s *= 10 {
		dec++
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

// Text metrics of basicfont.Face7x13.
const (
	lineHeight = 13
	ascent     = 11
	charWidth  = 7
	tickLen    = 4
)

func textWidth(s string) int { return len([]rune(s)) * charWidth }

// text draws s with its top-left corner at (x, y).
func text(img draw.Image, s string, x, y int, col color.Color) {
	d := font.Drawer{
		Dst:  img,
		Src:  image.NewUniform(col),
		Face: basicfont.Face7x13,
		Dot:  fixed.P(x, y+ascent),
	}
	d.DrawString(s)
}

// verticalText draws s rotated a quarter turn anticlockwise (reading bottom
// to top) with its left end at the bottom, its bounding box's bottom-left at
// (x, y).
func verticalText(img *image.RGBA, s string, x, y int, col color.RGBA) {
	w := textWidth(s)
	if w == 0 {
		return
	}
	mask := image.NewAlpha(image.Rect(0, 0, w, lineHeight))
	text(mask, s, 0, 0, color.Opaque)
	for i := range w {
		for j := range lineHeight {
			if a := mask.AlphaAt(i, j).A; a > 0 {
				blend(img, x+j, y-i, col, float64(a)/255)
			}
		}
	}
}

// blend paints col over img's pixel (x, y) with opacity a in [0, 1].
func blend(img *image.RGBA, x, y int, col color.RGBA, a float64) {
	if !(image.Point{x, y}.In(img.Rect)) || a <= 0 {
		return
	}
	if a >= 1 {
		img.SetRGBA(x, y, col)
		return
	}
	o := img.RGBAAt(x, y)
	mix := func(d, s uint8) uint8 { return uint8(math.Round(float64(d)*(1-a) + float64(s)*a)) }
	img.SetRGBA(x, y, color.RGBA{mix(o.R, col.R), mix(o.G, col.G), mix(o.B, col.B), 0xff})
}

func fillRect(img *image.RGBA, r image.Rectangle, col color.RGBA) {
	draw.Draw(img, r.Intersect(img.Rect), image.NewUniform(col), image.Point{}, draw.Src)
}

// segment draws an anti-aliased line of the given width from (x0, y0) to
// (x1, y1), clipped to clip.
func segment(img *image.RGBA, clip image.Rectangle, x0, y0, x1, y1, width float64, col color.RGBA) {
	half := width / 2
	box := image.Rect(
		int(math.Floor(min(x0, x1)-half-1)), int(math.Floor(min(y0, y1)-half-1)),
		int(math.Ceil(max(x0, x1)+half+2)), int(math.Ceil(max(y0, y1)+half+2)),
	).Intersect(clip)
	dx, dy := x1-x0, y1-y0
	l2 := dx*dx + dy*dy
	for py := box.Min.Y; py < box.Max.Y; py++ {
		for px := box.Min.X; px < box.Max.X; px++ {
			// Distance from the pixel centre to the segment.
			cx, cy := float64(px)+0.5, float64(py)+0.5
			t := 0.0
			if l2 > 0 {
				t = min(max(((cx-x0)*dx+(cy-y0)*dy)/l2, 0), 1)
			}
			ex, ey := cx-(x0+t*dx), cy-(y0+t*dy)
			d := math.Sqrt(ex*ex + ey*ey)
			blend(img, px, py, col, min(half+0.5-d, 1))
		}
	}
}

// disc draws an anti-aliased filled circle, clipped to clip.
func disc(img *image.RGBA, clip image.Rectangle, x, y, r float64, col color.RGBA) {
	segment(img, clip, x, y, x, y, 2*r, col)
}

// markerLimit is the most points per series drawn with markers; denser
// series are drawn as plain lines. An isolated point always gets a marker.
const markerLimit = 60

func (p *panel) draw(img *image.RGBA) {
	x0, y0 := p.plot.Min.X, p.plot.Min.Y
	x1, y1 := p.plot.Max.X-1, p.plot.Max.Y-1

	// Grid, ticks and tick labels.
	for _, v := range p.y.ticks() {
		py := int(math.Round(p.y.pix(v)))
		fillRect(img, image.Rect(x0, py, x1+1, py+1), gridColor)
		fillRect(img, image.Rect(x0-tickLen, py, x0, py+1), frame)
		s := formatTick(v, p.y.step)
		text(img, s, x0-tickLen-4-textWidth(s), py-lineHeight/2-1, ink)
	}
	for _, v := range p.x.ticks() {
		px := int(math.Round(p.x.pix(v)))
		fillRect(img, image.Rect(px, y0, px+1, y1+1), gridColor)
		fillRect(img, image.Rect(px, y1+1, px+1, y1+1+tickLen), frame)
		s := formatTick(v, p.x.step)
		text(img, s, px-textWidth(s)/2, y1+tickLen+4, ink)
	}

	// Frame.
	fillRect(img, image.Rect(x0, y0, x1+1, y0+1), frame)
	fillRect(img, image.Rect(x0, y1, x1+1, y1+1), frame)
	fillRect(img, image.Rect(x0, y0, x0+1, y1+1), frame)
	fillRect(img, image.Rect(x1, y0, x1+1, y1+1), frame)

	// Title and axis labels.
	mid := (x0 + x1) / 2
	if s := p.c.Title; s != "" {
		tx := mid - textWidth(s)/2
		text(img, s, tx, 8, ink)
		text(img, s, tx+1, 8, ink) // a second pass, one pixel over: bold
	}
	if s := p.c.XLabel; s != "" {
		text(img, s, mid-textWidth(s)/2, p.h-8-lineHeight, ink)
	}
	if s := p.c.YLabel; s != "" {
		verticalText(img, s, p.ox+8, (y0+y1)/2+textWidth(s)/2, ink)
	}

	// Lines, then markers on top.
	inner := p.plot.Inset(1)
	for _, l := range p.lines {
		for _, r := range l.runs {
			for i := r[0] + 1; i < r[1]; i++ {
				segment(img, inner, p.x.pix(l.px[i-1]), p.y.pix(l.py[i-1]), p.x.pix(l.px[i]), p.y.pix(l.py[i]), 2, l.color)
			}
		}
		for _, r := range l.runs {
			for i := r[0]; i < r[1]; i++ {
				if len(l.px) <= markerLimit || r[1]-r[0] == 1 {
					disc(img, inner, p.x.pix(l.px[i]), p.y.pix(l.py[i]), 3, l.color)
				}
			}
		}
	}
	if p.showLegend {
		p.legend(img)
	}
}

// legend draws the legend box in the corner of the plot that covers the
// fewest data points.
func (p *panel) legend(img *image.RGBA) {
	const (
		pad    = 6
		swatch = 24
		row    = lineHeight + 4
	)
	nameW := 0
	n := 0
	for _, l := range p.lines {
		if l.name != "" {
			nameW = max(nameW, textWidth(l.name))
			n++
		}
	}
	bw, bh := pad+swatch+pad+nameW+pad, pad+n*row-4+pad
	in := p.plot.Inset(8)
	corners := []image.Rectangle{
		image.Rect(in.Max.X-bw, in.Min.Y, in.Max.X, in.Min.Y+bh), // top right
		image.Rect(in.Min.X, in.Min.Y, in.Min.X+bw, in.Min.Y+bh), // top left
		image.Rect(in.Max.X-bw, in.Max.Y-bh, in.Max.X, in.Max.Y), // bottom right
		image.Rect(in.Min.X, in.Max.Y-bh, in.Min.X+bw, in.Max.Y), // bottom left
	}
	best, bestHits := corners[0], math.MaxInt
	for _, box := range corners {
		if hits := p.hits(box.Inset(-4)); hits < bestHits {
			best, bestHits = box, hits
		}
	}
	fillRect(img, best, white)
	fillRect(img, image.Rect(best.Min.X, best.Min.Y, best.Max.X, best.Min.Y+1), legendBox)
	fillRect(img, image.Rect(best.Min.X, best.Max.Y-1, best.Max.X, best.Max.Y), legendBox)
	fillRect(img, image.Rect(best.Min.X, best.Min.Y, best.Min.X+1, best.Max.Y), legendBox)
	fillRect(img, image.Rect(best.Max.X-1, best.Min.Y, best.Max.X, best.Max.Y), legendBox)
	y := best.Min.Y + pad
	for _, l := range p.lines {
		if l.name == "" {
			continue
		}
		cy := float64(y) + lineHeight/2.0
		sx := float64(best.Min.X + pad)
		segment(img, best, sx, cy, sx+swatch, cy, 2, l.color)
		if len(l.px) <= markerLimit {
			disc(img, best, sx+swatch/2, cy, 3, l.color)
		}
		text(img, l.name, best.Min.X+pad+swatch+pad, y, ink)
		y += row
	}
}

// hits counts the points, and samples along the lines, that fall in r.
func (p *panel) hits(r image.Rectangle) int {
	n := 0
	in := func(x, y float64) bool { return image.Pt(int(x), int(y)).In(r) }
	for _, l := range p.lines {
		for _, run := range l.runs {
			for i := run[0]; i < run[1]; i++ {
				x, y := p.x.pix(l.px[i]), p.y.pix(l.py[i])
				if in(x, y) {
					n++
				}
				if i+1 < run[1] {
					nx, ny := p.x.pix(l.px[i+1]), p.y.pix(l.py[i+1])
					steps := int(math.Hypot(nx-x, ny-y)/4) + 1
					for k := 1; k < steps; k++ {
						f := float64(k) / float64(steps)
						if in(x+f*(nx-x), y+f*(ny-y)) {
							n++
						}
					}
				}
			}
		}
	}
	return n
}
