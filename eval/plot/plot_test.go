package plot

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestNiceStep(t *testing.T) {
	tests := []struct {
		span     float64
		maxTicks int
		want     float64
	}{
		{1, 5, 0.2},
		{10, 5, 2},
		{7, 5, 2},      // raw 1.4
		{0.83, 5, 0.2}, // raw 0.166
		{100, 10, 10},
		{3, 10, 0.5},   // raw 0.3
		{1.1, 10, 0.2}, // raw 0.11
		{0.9, 4, 0.25}, // raw 0.225
		{49, 8, 10},    // raw 6.1
		{2e-4, 4, 5e-5},
		{3e6, 6, 5e5},
	}
	for _, tt := range tests {
		got := niceStep(tt.span, tt.maxTicks)
		if math.Abs(got-tt.want) > 1e-12*tt.want {
			t.Errorf("niceStep(%v, %d) = %v, want %v", tt.span, tt.maxTicks, got, tt.want)
		}
		if n := tt.span / got; n > float64(tt.maxTicks)+1e-9 {
			t.Errorf("niceStep(%v, %d) = %v gives %v intervals", tt.span, tt.maxTicks, got, n)
		}
	}
}

func TestTicks(t *testing.T) {
	tests := []struct {
		a    axis
		want []float64
	}{
		{axis{lo: -0.04, hi: 1.04, step: 0.2}, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{axis{lo: 0.5, hi: 10.5, step: 5}, []float64{5, 10}},
		{axis{lo: -3, hi: 3, step: 2.5}, []float64{-2.5, 0, 2.5}},
		{axis{lo: 1, hi: 2, step: 1}, []float64{1, 2}}, // ends on ticks
	}
	for _, tt := range tests {
		got := tt.a.ticks()
		if len(got) != len(tt.want) {
			t.Errorf("%+v ticks = %v, want %v", tt.a, got, tt.want)
			continue
		}
		for i := range got {
			if math.Abs(got[i]-tt.want[i]) > 1e-9 {
				t.Errorf("%+v ticks = %v, want %v", tt.a, got, tt.want)
				break
			}
		}
	}
}

func TestFormatTick(t *testing.T) {
	tests := []struct {
		v, step float64
		want    string
	}{
		{0.25, 0.05, "0.25"},
		{2, 0.5, "2.0"},
		{1000, 250, "1000"},
		{0.125, 0.025, "0.125"},
		{0.6000000000000001, 0.2, "0.6"},
		{-1e-17, 0.2, "0"},
		{15, 5, "15"},
		{2.5e6, 5e5, "2.5e+06"},
		{1e-5, 5e-6, "1e-05"},
	}
	for _, tt := range tests {
		if got := formatTick(tt.v, tt.step); got != tt.want {
			t.Errorf("formatTick(%v, %v) = %q, want %q", tt.v, tt.step, got, tt.want)
		}
	}
}

func epochs(n int, f func(i int) float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func history() []Chart {
	loss := Chart{
		Title: "Loss", XLabel: "epoch", YLabel: "binary cross-entropy",
		Series: []Series{
			{Name: "train", Y: epochs(30, func(i int) float64 { return 0.7*math.Exp(-float64(i)/8) + 0.05 })},
			{Name: "validation", Y: epochs(30, func(i int) float64 { return 0.65*math.Exp(-float64(i)/10) + 0.1 + 0.01*float64(i%3) })},
		},
	}
	mAP := Chart{
		Title: "Validation mAP", XLabel: "epoch", YLabel: "mAP",
		Series: []Series{{Name: "validation mAP", Y: epochs(30, func(i int) float64 { return 0.95 - 0.6*math.Exp(-float64(i)/6) })}},
	}
	return []Chart{loss, mAP}
}

// countColor counts the pixels of exactly col in region, and how many of
// them lie outside r.
func countColor(img *image.RGBA, col color.RGBA, region, r image.Rectangle) (n, outside int) {
	region = region.Intersect(img.Bounds())
	for y := region.Min.Y; y < region.Max.Y; y++ {
		for x := region.Min.X; x < region.Max.X; x++ {
			if img.RGBAAt(x, y) == col {
				n++
				if !(image.Pt(x, y).In(r)) {
					outside++
				}
			}
		}
	}
	return n, outside
}

func TestRenderSeriesInsideAxes(t *testing.T) {
	charts := history()
	img, err := Render(charts...)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := img.Bounds().Size(), image.Pt(2*DefaultWidth, DefaultHeight); got != want {
		t.Fatalf("size %v, want %v", got, want)
	}
	for i, c := range charts {
		p, err := newPanel(c, i*DefaultWidth)
		if err != nil {
			t.Fatal(err)
		}
		region := image.Rect(i*DefaultWidth, 0, (i+1)*DefaultWidth, DefaultHeight)
		for j := range c.Series {
			n, out := countColor(img, Palette[j], region, p.plot)
			if n < 300 {
				t.Errorf("panel %d series %d: %d pixels of its colour, want a line's worth", i, j, n)
			}
			if out != 0 {
				t.Errorf("panel %d series %d: %d pixels of its colour outside the axes %v", i, j, out, p.plot)
			}
		}
	}
}

func TestRenderColorAndText(t *testing.T) {
	red := color.RGBA{0xff, 0, 0, 0xff}
	c := Chart{Title: "T", YLabel: "y", XLabel: "x", Series: []Series{{X: []float64{0, 1, 2}, Y: []float64{3, 1, 2}, Color: red}}}
	img, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := countColor(img, red, img.Bounds(), img.Bounds()); n < 100 {
		t.Errorf("%d red pixels, want a line's worth", n)
	}
	if n, _ := countColor(img, ink, image.Rect(0, 0, DefaultWidth, 30), img.Bounds()); n == 0 {
		t.Error("no title text in the top band")
	}
	if n, _ := countColor(img, ink, image.Rect(0, 0, 24, DefaultHeight), img.Bounds()); n == 0 {
		t.Error("no y label text in the left band")
	}
}

func TestRenderGapAtNaN(t *testing.T) {
	c := Chart{Series: []Series{{X: []float64{0, 1, 2, 3, 4, 5}, Y: []float64{1, 1, 1, math.NaN(), 1, 1}}}}
	img, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := newPanel(c, 0)
	blue := Palette[0]
	column := func(x float64) int {
		px := int(p.x.pix(x))
		n, _ := countColor(img, blue, image.Rect(px, 0, px+1, DefaultHeight), img.Bounds())
		return n
	}
	if column(1.5) == 0 || column(4.5) == 0 {
		t.Errorf("no line at x=1.5 (%d px) or x=4.5 (%d px)", column(1.5), column(4.5))
	}
	// Points 2 and 4 are not joined: nothing between x=2.2 and x=3.8.
	for _, x := range []float64{2.2, 2.6, 3, 3.4, 3.8} {
		if n := column(x); n != 0 {
			t.Errorf("%d line pixels at x=%v, inside the NaN gap", n, x)
		}
	}
}

func TestRenderDegenerate(t *testing.T) {
	tests := []struct {
		name string
		s    Series
	}{
		{"single point", Series{Y: []float64{0.5}}},
		{"constant", Series{Y: []float64{2, 2, 2, 2}}},
		{"constant zero", Series{X: []float64{3, 3}, Y: []float64{0, 0}}},
		{"isolated by NaN", Series{Y: []float64{math.NaN(), 1, math.Inf(1), 2}}},
		{"many points", Series{Y: epochs(1000, func(i int) float64 { return math.Sin(float64(i) / 50) })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Chart{Series: []Series{tt.s}}
			img, err := Render(c)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := newPanel(c, 0)
			n, out := countColor(img, Palette[0], img.Bounds(), p.plot)
			if n < 20 || out != 0 {
				t.Errorf("%d series pixels, %d outside the axes; want some, all inside", n, out)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		name   string
		charts []Chart
		noData bool
	}{
		{"no charts", nil, true},
		{"no series", []Chart{{Title: "empty"}}, true},
		{"empty series", []Chart{{Series: []Series{{Name: "a"}}}}, true},
		{"all NaN", []Chart{{Series: []Series{{Y: []float64{math.NaN(), math.NaN()}}}}}, true},
		{"second chart empty", []Chart{history()[0], {}}, true},
		{"length mismatch", []Chart{{Series: []Series{{X: []float64{1, 2}, Y: []float64{1}}}}}, false},
		{"too small", []Chart{{Width: 50, Height: 50, Series: []Series{{Y: []float64{1, 2}}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(tt.charts...)
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrNoData) != tt.noData {
				t.Errorf("error %q: errors.Is(ErrNoData) = %v, want %v", err, !tt.noData, tt.noData)
			}
		})
	}
}

func TestLinesAndPanelsWritePNG(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		write  func(path string) error
		wantSz image.Point
	}{
		{"lines", func(p string) error { return Lines(p, history()[0]) }, image.Pt(800, 500)},
		{"panels", func(p string) error { return Panels(p, history()) }, image.Pt(1600, 500)},
		{"sized", func(p string) error {
			c := history()[1]
			c.Width, c.Height = 400, 300
			return Panels(p, []Chart{history()[0], c})
		}, image.Pt(1200, 500)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".png")
			if err := tt.write(path); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("not a PNG: %v", err)
			}
			if got := img.Bounds().Size(); got != tt.wantSz {
				t.Errorf("size %v, want %v", got, tt.wantSz)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(tests) {
		t.Errorf("%d files in the directory, want %d (a temporary file left behind?)", len(entries), len(tests))
	}
}

func TestPanelsErrorKeepsOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.png")
	if err := Lines(path, history()[0]); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := Lines(path, Chart{}); err == nil {
		t.Fatal("no error for an empty chart")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("a failed write changed the file")
	}
	if err := Lines(filepath.Join(path, "x.png"), history()[0]); err == nil {
		t.Error("no error writing under a file")
	}
}

func TestEncode(t *testing.T) {
	var buf bytes.Buffer
	if err := Encode(&buf, history()...); err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Width != 1600 || cfg.Height != 500 {
		t.Errorf("size %dx%d, want 1600x500", cfg.Width, cfg.Height)
	}
}

// TestWriteSample writes the sample picture when PLOT_SAMPLE names a path,
// for a person to look at.
func TestWriteSample(t *testing.T) {
	path := os.Getenv("PLOT_SAMPLE")
	if path == "" {
		t.Skip("set PLOT_SAMPLE=/tmp/plot_sample.png to write the sample picture")
	}
	charts := history()
	charts[1].Series[0].Y[7] = math.NaN()
	if err := Panels(path, charts); err != nil {
		t.Fatal(err)
	}
}
