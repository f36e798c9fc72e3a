package netlab

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/tailorml/tailor/eval/plot"
)

// Measured is a row of the table Row.Markdown writes, read back: its
// scenario's key (every column before the workers' count's effect: the
// servers, the link, the mode, the compression, the overlap, the
// dilation), its workers, its img/s and its links' bound.
type Measured struct {
	Key            string
	Workers        int
	ImgPerSec      float64
	BoundImgPerSec float64
}

// ReadRows reads the rows of Row.Markdown's table from r; other lines are
// skipped.
func ReadRows(r io.Reader) ([]Measured, error) {
	var out []Measured
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		f := strings.Split(strings.Trim(line, "|"), "|")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || len(f) < 12 {
			continue // the header, its rule, or another table
		}
		img, err1 := strconv.ParseFloat(f[7], 64)
		bound, err2 := strconv.ParseFloat(f[11], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("netlab: bad row %q", line)
		}
		key := fmt.Sprintf("P=%s, %s, %s, %s, overlap %s", f[1], f[2], f[3], f[4], f[5])
		// a note after the row's last column (scripts/netlab-scaling.sh
		// writes the image size there) is part of its scenario
		if last := f[len(f)-1]; len(f) > 15 && last != "" {
			key = last + ", " + key
		}
		out = append(out, Measured{Key: key, Workers: n, ImgPerSec: img, BoundImgPerSec: bound})
	}
	return out, sc.Err()
}

// Efficiency is the scaling efficiency of each scenario with a one-worker
// row, by workers: measured, img/s at N ÷ (N × img/s at 1); and the
// links' bound's, bound at N ÷ (N × bound at 1). Keys are in the order of
// their first row.
func Efficiency(rows []Measured) (keys []string, eff, bound map[string][][2]float64) {
	one, oneBound := map[string]float64{}, map[string]float64{}
	for _, r := range rows {
		if r.Workers == 1 {
			one[r.Key], oneBound[r.Key] = r.ImgPerSec, r.BoundImgPerSec
		}
	}
	eff, bound = map[string][][2]float64{}, map[string][][2]float64{}
	for _, r := range rows {
		base, ok := one[r.Key]
		if !ok || base <= 0 {
			continue
		}
		if !slices.Contains(keys, r.Key) {
			keys = append(keys, r.Key)
		}
		n := float64(r.Workers)
		eff[r.Key] = append(eff[r.Key], [2]float64{n, r.ImgPerSec / (n * base)})
		if b := oneBound[r.Key]; b > 0 {
			bound[r.Key] = append(bound[r.Key], [2]float64{n, r.BoundImgPerSec / (n * b)})
		}
	}
	return keys, eff, bound
}

// Plot draws the scaling efficiency of every scenario of rows that has a
// one-worker row and at least two others (a curve, not a pair), measured
// and bound, against the workers, to a PNG at path.
func Plot(path string, rows []Measured) error {
	all, eff, bound := Efficiency(rows)
	var keys []string
	for _, k := range all {
		if len(eff[k]) >= 3 {
			keys = append(keys, k)
		}
	}
	c := plot.Chart{Title: "scaling efficiency: img/s at N / (N x img/s at 1)", XLabel: "workers", YLabel: "efficiency", Width: 900, Height: 500}
	for i, k := range keys {
		for j, s := range []struct {
			name string
			pts  [][2]float64
		}{{k + ": measured", eff[k]}, {k + ": link bound", bound[k]}} {
			col := plot.Palette[(2*i+j)%len(plot.Palette)]
			var x, y []float64
			for _, p := range s.pts {
				x, y = append(x, p[0]), append(y, p[1])
			}
			c.Series = append(c.Series, plot.Series{Name: s.name, X: x, Y: y, Color: col})
		}
	}
	return plot.Lines(path, c)
}
