package progress

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestBar(tb testing.TB, total int64, tty bool) (*Bar, *bytes.Buffer, *fakeClock) {
	tb.Helper()
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	return newBar(&buf, total, "ingest", tty, clk.now), &buf, clk
}

func TestPlainPrintsEveryTenPercent(t *testing.T) {
	b, buf, clk := newTestBar(t, 100, false)
	for range 100 {
		clk.advance(10 * time.Millisecond)
		b.Add(1)
	}
	b.Finish()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	// One line per 10% step up to 90%, then the final line.
	if got, want := len(lines), 10; got != want {
		t.Fatalf("got %d lines, want %d:\n%s", got, want, buf.String())
	}
	if strings.Contains(buf.String(), "\r") {
		t.Errorf("plain output contains a carriage return: %q", buf.String())
	}
	if got, want := lines[0], "ingest  10/100   10.0%  100/s  ETA 900ms"; got != want {
		t.Errorf("first line = %q, want %q", got, want)
	}
	if got, want := lines[9], "ingest  100/100  100.0%  100/s  done in 1s"; got != want {
		t.Errorf("final line = %q, want %q", got, want)
	}
}

func TestPlainPrintsEveryFewSecondsWhenSlow(t *testing.T) {
	b, buf, clk := newTestBar(t, 1000, false)
	for range 3 {
		clk.advance(3 * time.Second)
		b.Add(1)
	}
	// 9s, 0.3%: one line at the 6s mark only.
	if got := strings.Count(buf.String(), "\n"); got != 1 {
		t.Fatalf("got %d lines, want 1:\n%s", got, buf.String())
	}
	if want := "ingest  2/1000    0.2%  0.3/s  ETA 49m54s\n"; buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

func TestTerminalRedrawsInPlace(t *testing.T) {
	b, buf, clk := newTestBar(t, 4, true)
	clk.advance(time.Second)
	b.Add(1) // drawn: a second has passed
	b.Add(1) // not drawn: no time has passed
	clk.advance(time.Second)
	b.Add(1)
	b.Finish()
	want := "\ringest  1/4   25.0%  1.0/s  ETA 3s" +
		"\ringest  3/4   75.0%  1.5/s  ETA 667ms" +
		"\ringest  3/4   75.0%  1.5/s  done in 2s\n"
	if got := buf.String(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestTerminalPadsShorterLines(t *testing.T) {
	b, buf, clk := newTestBar(t, 0, true)
	clk.advance(time.Second)
	b.Add(1000)
	clk.advance(time.Second)
	b.Finish()
	// "ingest  1000  1000/s  1s elapsed" is longer than "ingest  1000  500/s  done in 2s".
	want := "\ringest  1000  1000/s  1s elapsed" + "\ringest  1000  500/s  done in 2s" + " \n"
	if got := buf.String(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestLineFormats(t *testing.T) {
	tests := []struct {
		name    string
		total   int64
		n       int64
		elapsed time.Duration
		want    string
	}{
		{"no progress yet", 10, 0, time.Second, "ingest  0/10    0.0%  0.0/s  ETA ?"},
		{"unknown total", 0, 5, 2 * time.Second, "ingest  5  2.5/s  2s elapsed"},
		{"past total", 10, 12, time.Second, "ingest  12/10  120.0%  12/s  ETA 0s"},
		{"zero elapsed", 10, 3, 0, "ingest  3/10   30.0%  0.0/s  ETA ?"},
		{"hopelessly slow", 1 << 60, 1, time.Hour, "ingest  1/1152921504606846976    0.0%  0.0/s  ETA ?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _, clk := newTestBar(t, tt.total, false)
			b.n = tt.n
			clk.advance(tt.elapsed)
			if got := b.line(clk.now(), false); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConcurrentAdd(t *testing.T) {
	b, buf, _ := newTestBar(t, 8000, false)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				b.Add(1)
			}
		})
	}
	wg.Wait()
	b.Finish()
	if got := b.Count(); got != 8000 {
		t.Errorf("count = %d, want 8000", got)
	}
	if !strings.Contains(buf.String(), "8000/8000") {
		t.Errorf("final line missing 8000/8000:\n%s", buf.String())
	}
}

func TestFinishIsFinal(t *testing.T) {
	b, buf, _ := newTestBar(t, 10, false)
	b.Finish()
	n := buf.Len()
	b.Add(10)
	b.Finish()
	if buf.Len() != n {
		t.Errorf("output after Finish: %q", buf.String()[n:])
	}
}

func TestNilBarAndWriter(t *testing.T) {
	var b *Bar
	b.Add(1)
	b.Finish()
	if b.Count() != 0 {
		t.Error("nil bar counted")
	}
	New(nil, 3, "x").Add(3) // must not panic
}

func TestIsTerminal(t *testing.T) {
	var buf bytes.Buffer
	if isTerminal(&buf) {
		t.Error("a buffer is not a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a regular file is not a terminal")
	}
}
