package dashboard

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/runstatus"
)

// series is one line of a chart.
type series struct {
	Name  string
	Class string // its colour, a class of the stylesheet
	X, Y  []float64
}

// chart is one curve panel, drawn as inline SVG.
type chart struct {
	ID     string // the element id, for tests and the page's script
	Title  string
	Series []series
}

// runCharts are a run's curves per epoch: training and validation loss,
// validation mAP, images per second and the learning rate.
func runCharts(v RunView) []chart {
	return historyCharts(v.History, "", "s1")
}

func historyCharts(h coordinator.History, suffix, class string) []chart {
	var x, tl, vl, mp, ips, lr []float64
	for _, e := range h.Epochs {
		x = append(x, float64(e.Epoch))
		tl, vl, mp = append(tl, e.TrainLoss), append(vl, e.ValLoss), append(mp, e.ValMAP)
		ips, lr = append(ips, e.ImgPerSec), append(lr, e.LR)
	}
	return []chart{
		{ID: "chart-loss" + suffix, Title: "loss per epoch", Series: []series{{Name: "training", Class: class, X: x, Y: tl}, {Name: "validation", Class: "s2", X: x, Y: vl}}},
		{ID: "chart-map" + suffix, Title: "validation mAP", Series: []series{{Name: "val mAP", Class: class, X: x, Y: mp}}},
		{ID: "chart-imgs" + suffix, Title: "images per second", Series: []series{{Name: "img/s", Class: class, X: x, Y: ips}}},
		{ID: "chart-lr" + suffix, Title: "learning rate", Series: []series{{Name: "lr", Class: class, X: x, Y: lr}}},
	}
}

const (
	chartW, chartH         = 360, 180
	padL, padR, padT, padB = 66, 10, 10, 24
	plotW, plotH           = chartW - padL - padR, chartH - padT - padB
	maxTicks               = 5
	emptyChart             = "no validated epoch yet"
)

// SVG draws the chart: axes with a few ticks, one polyline per series and
// a dot per point (so that a single epoch shows).
func (c chart) SVG() template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" id="%s" viewBox="0 0 %d %d" role="img" aria-label="%s">`, template.HTMLEscapeString(c.ID), chartW, chartH, template.HTMLEscapeString(c.Title))
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	points := 0
	for _, s := range c.Series {
		for i := range s.X {
			if i >= len(s.Y) || math.IsNaN(s.Y[i]) || math.IsInf(s.Y[i], 0) {
				continue
			}
			xmin, xmax = math.Min(xmin, s.X[i]), math.Max(xmax, s.X[i])
			ymin, ymax = math.Min(ymin, s.Y[i]), math.Max(ymax, s.Y[i])
			points++
		}
	}
	if points == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="empty">%s</text></svg>`, chartW/2, chartH/2, emptyChart)
		return template.HTML(b.String())
	}
	if xmax == xmin {
		xmin, xmax = xmin-1, xmax+1
	}
	if ymax == ymin {
		d := math.Max(math.Abs(ymax)*0.1, 1e-6)
		ymin, ymax = ymin-d, ymax+d
	} else {
		d := (ymax - ymin) * 0.05
		ymin, ymax = ymin-d, ymax+d
	}
	px := func(x float64) float64 { return padL + (x-xmin)/(xmax-xmin)*plotW }
	py := func(y float64) float64 { return padT + (1-(y-ymin)/(ymax-ymin))*plotH }
	fmt.Fprintf(&b, `<rect class="frame" x="%d" y="%d" width="%d" height="%d"/>`, padL, padT, plotW, plotH)
	for i := 0; i <= maxTicks-1; i++ {
		y := ymin + (ymax-ymin)*float64(i)/float64(maxTicks-1)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/><text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>`,
			padL, padL+plotW, py(y), py(y), padL-4, py(y)+4, tickLabel(y, ymax-ymin))
	}
	step := math.Max(1, math.Ceil((xmax-xmin)/float64(maxTicks)))
	for x := math.Ceil(xmin); x <= xmax; x += step {
		fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%d" text-anchor="middle">%g</text>`, px(x), chartH-8, x)
	}
	for _, s := range c.Series {
		var pts []string
		for i := range s.X {
			if i >= len(s.Y) || math.IsNaN(s.Y[i]) || math.IsInf(s.Y[i], 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.X[i]), py(s.Y[i])))
		}
		fmt.Fprintf(&b, `<polyline class="line %s" points="%s"><title>%s</title></polyline>`, template.HTMLEscapeString(s.Class), strings.Join(pts, " "), template.HTMLEscapeString(s.Name))
		for _, p := range pts {
			x, y, _ := strings.Cut(p, ",")
			fmt.Fprintf(&b, `<circle class="dot %s" cx="%s" cy="%s" r="2.5"/>`, template.HTMLEscapeString(s.Class), x, y)
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// Points is how many points the chart draws (the page's tests count them).
func (c chart) Points() int {
	n := 0
	for _, s := range c.Series {
		n += len(s.Y)
	}
	return n
}

// tickLabel writes an axis value with the digits that tell the ticks of
// an axis spanning span apart.
func tickLabel(v, span float64) string {
	if span <= 0 || math.IsNaN(span) {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	mag := math.Abs(v)
	if mag != 0 && (mag >= 1e5 || mag < 1e-2) {
		digits := int(math.Ceil(math.Log10(mag / span)))
		s := strconv.FormatFloat(v, 'e', min(max(digits, 1), 6), 64)
		s = strings.Replace(s, "e-0", "e-", 1)
		return strings.Replace(s, "e+0", "e+", 1)
	}
	decimals := int(math.Ceil(-math.Log10(span))) + 1
	return strconv.FormatFloat(v, 'f', min(max(decimals, 0), 6), 64)
}

// comparison is two runs' curves side by side.
type comparison struct {
	A, B             RunSummary
	ChartsA, ChartsB []chart
}

func (c *collector) compare(ctx context.Context, a, b string) (comparison, error) {
	var cmp comparison
	for i, run := range []string{a, b} {
		s, h, err := c.curves(ctx, run)
		if err != nil {
			return cmp, err
		}
		if i == 0 {
			cmp.A, cmp.ChartsA = s, historyCharts(h, "-a", "s1")
		} else {
			cmp.B, cmp.ChartsB = s, historyCharts(h, "-b", "s3")
		}
	}
	return cmp, nil
}

// curves are a run's summary and history: from etcd, or from its
// checkpoints when etcd no longer has it.
func (c *collector) curves(ctx context.Context, run string) (RunSummary, coordinator.History, error) {
	v, err := runstatus.Collect(ctx, c.cli, run, runstatus.Options{EtcdOnly: true})
	if errors.Is(err, runstatus.ErrNotSubmitted) && c.archive != nil {
		arch, aerr := archivedRuns(ctx, *c.archive)
		if aerr != nil {
			return RunSummary{}, coordinator.History{}, errors.Join(err, aerr)
		}
		if jobs, ok := arch[run]; ok {
			j, m, err := latest(ctx, *c.archive, jobs)
			if err != nil {
				return RunSummary{}, coordinator.History{}, err
			}
			rv, err := archivedFrom(ctx, *c.archive, j, m, false)
			return rv.Summary, rv.History, err
		}
	}
	if err != nil {
		return RunSummary{}, coordinator.History{}, err
	}
	var h coordinator.History
	if _, err := cluster.GetJSON(ctx, c.cli, cluster.RunKeys(run).History(), &h); err != nil && !errors.Is(err, cluster.ErrNotFound) {
		return RunSummary{}, h, err
	}
	return summarise(v, h), h, nil
}

func unescape(s string) (string, error) { return url.PathUnescape(s) }

// funcs are the functions the templates call.
var funcs = template.FuncMap{
	"pathesc": url.PathEscape,
	"f":       func(prec int, v float64) string { return strconv.FormatFloat(v, 'f', prec, 64) },
	"pct": func(v float64) string {
		return strconv.FormatFloat(v*100, 'f', 0, 64) + "%"
	},
	"pctw": func(v float64) string { return strconv.FormatFloat(v*100, 'f', 1, 64) },
	"dur": func(secs float64) string {
		if secs <= 0 {
			return "–"
		}
		return (time.Duration(secs) * time.Second).String()
	},
	"bytes": func(v any) string {
		var n float64
		switch x := v.(type) {
		case int64:
			n = float64(x)
		case uint64:
			n = float64(x)
		case int:
			n = float64(x)
		}
		units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
		i := 0
		for n >= 1024 && i < len(units)-1 {
			n /= 1024
			i++
		}
		if i == 0 {
			return fmt.Sprintf("%.0f %s", n, units[i])
		}
		return fmt.Sprintf("%.1f %s", n, units[i])
	},
	"clock": func(t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return t.Local().Format("15:04:05")
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		d := now.Sub(t).Round(100 * time.Millisecond)
		if d < 0 {
			d = 0
		}
		return d.String() + " ago"
	},
	"apf": func(p *float64) string {
		if p == nil {
			return "–"
		}
		return strconv.FormatFloat(*p, 'f', 3, 64)
	},
	"reverse": func(evs []coordinator.Event) []coordinator.Event {
		out := make([]coordinator.Event, len(evs))
		for i, e := range evs {
			out[len(evs)-1-i] = e
		}
		return out
	},
	"reverseck": func(cs []coordinator.CheckpointRecord) []coordinator.CheckpointRecord {
		out := make([]coordinator.CheckpointRecord, len(cs))
		for i, e := range cs {
			out[len(cs)-1-i] = e
		}
		return out
	},
	"refused": func(m map[string]uint64) string {
		if len(m) == 0 {
			return "none"
		}
		var parts []string
		for _, r := range sortedKeys(m) {
			parts = append(parts, fmt.Sprintf("%s %d", r, m[r]))
		}
		return strings.Join(parts, ", ")
	},
}

func sortedKeys(m map[string]uint64) []string { return slices.Sorted(maps.Keys(m)) }
