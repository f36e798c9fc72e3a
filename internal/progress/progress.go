// Package progress draws a progress bar for long loops: ingest, training
// epochs. On a terminal it redraws one line in place with '\r'; elsewhere
// (CI logs, files) it prints a plain line every 10% or every few seconds.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

const (
	// ttyEvery is the shortest time between redraws on a terminal.
	ttyEvery = 100 * time.Millisecond
	// plainEvery is the longest time between plain lines while work goes on.
	plainEvery = 5 * time.Second
	// plainSteps is the number of percent steps that each get a plain line.
	plainSteps = 10
	// maxETA is the longest ETA shown; beyond it the ETA is "?".
	maxETA = 1000 * time.Hour
)

// Bar counts finished items of a known (or, with total <= 0, unknown) total
// and reports count/total, percent, rate and ETA. It is safe for concurrent
// use; a nil *Bar does nothing.
type Bar struct {
	mu    sync.Mutex
	w     io.Writer
	total int64
	label string
	tty   bool
	now   func() time.Time

	start    time.Time
	n        int64
	lastDraw time.Time // last terminal redraw or plain line
	lastStep int64     // plain mode: last percent step printed
	width    int       // terminal mode: length of the last drawn line
	done     bool
}

// New returns a bar writing to w. It redraws in place when w is a terminal.
// A nil w discards the output.
func New(w io.Writer, total int64, label string) *Bar {
	return newBar(w, total, label, isTerminal(w), time.Now)
}

func newBar(w io.Writer, total int64, label string, tty bool, now func() time.Time) *Bar {
	if w == nil {
		w = io.Discard
	}
	t := now()
	return &Bar{w: w, total: total, label: label, tty: tty, now: now, start: t, lastDraw: t}
}

// IsTerminal reports whether w is a character device other than a dumb
// terminal: whether output to it may redraw in place.
func IsTerminal(w io.Writer) bool { return isTerminal(w) }

// isTerminal reports whether w is a character device other than a dumb terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || f == nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	return os.Getenv("TERM") != "dumb"
}

// Add records n more finished items.
func (b *Bar) Add(n int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.n += n
	t := b.now()
	if b.tty {
		if t.Sub(b.lastDraw) >= ttyEvery {
			b.draw(t, false)
		}
		return
	}
	step := int64(-1)
	if b.total > 0 {
		step = min(b.n, b.total) * plainSteps / b.total
	}
	if b.total > 0 && b.n >= b.total {
		return // Finish prints the 100% line
	}
	if step > b.lastStep || t.Sub(b.lastDraw) >= plainEvery {
		if step > b.lastStep {
			b.lastStep = step
		}
		b.draw(t, false)
	}
}

// Count returns the number of items added so far.
func (b *Bar) Count() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// Finish prints the final line with the elapsed time. Later calls to Add and
// Finish do nothing.
func (b *Bar) Finish() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	b.draw(b.now(), true)
}

// draw writes the current state; the caller holds mu.
func (b *Bar) draw(t time.Time, final bool) {
	b.lastDraw = t
	line := b.line(t, final)
	if !b.tty {
		fmt.Fprintln(b.w, line)
		return
	}
	pad := ""
	if n := b.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	b.width = len(line)
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(b.w, "\r%s%s%s", line, pad, end)
}

func (b *Bar) line(t time.Time, final bool) string {
	elapsed := t.Sub(b.start)
	var rate float64
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(b.n) / s
	}
	var sb strings.Builder
	if b.label != "" {
		sb.WriteString(b.label)
		sb.WriteString("  ")
	}
	if b.total > 0 {
		fmt.Fprintf(&sb, "%d/%d  %5.1f%%", b.n, b.total, 100*float64(b.n)/float64(b.total))
	} else {
		fmt.Fprintf(&sb, "%d", b.n)
	}
	sb.WriteString("  ")
	sb.WriteString(formatRate(rate))
	switch {
	case final:
		fmt.Fprintf(&sb, "  done in %s", formatDuration(elapsed))
	case b.total <= 0:
		fmt.Fprintf(&sb, "  %s elapsed", formatDuration(elapsed))
	case b.n >= b.total:
		sb.WriteString("  ETA 0s")
	case rate > 0 && float64(b.total-b.n)/rate < maxETA.Seconds():
		eta := time.Duration(float64(b.total-b.n) / rate * float64(time.Second))
		fmt.Fprintf(&sb, "  ETA %s", formatDuration(eta))
	default:
		sb.WriteString("  ETA ?")
	}
	return sb.String()
}

func formatRate(r float64) string {
	if r < 10 {
		return fmt.Sprintf("%.1f/s", r)
	}
	return fmt.Sprintf("%.0f/s", r)
}

func formatDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
