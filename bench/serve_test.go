package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// ServeSingle drives a real server (a tiny run) and its lines parse back.
func TestServeSingleRoundTrip(t *testing.T) {
	c := DefaultServe()
	c.Size, c.Concurrency, c.Warmup, c.Duration, c.Images, c.MaxBatch = 32, []int{1, 4}, 50*time.Millisecond, 300*time.Millisecond, 4, 4
	rs, err := ServeSingle(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d results, want 2", len(rs))
	}
	for i, r := range rs {
		if r.Concurrency != c.Concurrency[i] || r.Requests < 1 || r.Errors != 0 || r.ImgPerSec <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.MeanBatch < 1 || r.CPUPerImg <= 0 {
			t.Errorf("result %+v", r)
		}
		back, err := ParseServeLine(r.Line(32))
		if err != nil || back.Concurrency != r.Concurrency || back.Requests != r.Requests || back.CPUPerImg <= 0 {
			t.Errorf("line %q parses back as %+v, %v", r.Line(32), back, err)
		}
	}
	if rs[0].MeanBatch != 1 {
		t.Errorf("one client: mean batch %g, want 1", rs[0].MeanBatch)
	}
	var buf bytes.Buffer
	WriteServeTable(&buf, DefaultConfig(), []ServeRow{{Size: 64, Serve: ServeResult{Concurrency: 32, ImgPerSec: 80, P50: 10 * time.Millisecond, P99: 20 * time.Millisecond, MeanBatch: 16, CPUPerImg: 0.004, ServerCPUPerImg: 0.0025},
		Runs: []float64{70, 80, 90}, InferBatch: Measurement{ImgPerSec: 100, CPUPerImg: 0.003}, InferSingle: Measurement{StepSec: 0.005, P99Sec: 0.009}}})
	for _, want := range []string{"| 64 | 32 | 80.0 (70–90) | 10.00 | 20.00 | 16.0 | 100.0 | 0.80x | 5.00 (9.00) | 4.00x | 4.00, 2.50, 3.00 | 1.20x |"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q: %s", want, buf.String())
		}
	}
	for _, bad := range []string{"SERVE concurrency=0", "SERVE concurrency=1 requests=x"} {
		if _, err := ParseServeLine(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
