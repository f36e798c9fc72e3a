package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	m, err := ParseLine("BASELINE framework=pytorch mode=train size=64 batch=32 threads=2 layout=nhwc img_per_s=190.50 median_step_s=0.1680 peak_rss_mb=452")
	if err != nil {
		t.Fatal(err)
	}
	if m.Framework != "pytorch" || m.Layout != "nhwc" || m.ImgPerSec != 190.5 || m.StepSec != 0.168 || m.PeakRSSMB != 452 {
		t.Errorf("parsed %+v", m)
	}
	for _, bad := range []string{"BASELINE framework=x", "BASELINE framework=x img_per_s=abc", "BASELINE img_per_s=3"} {
		if _, err := ParseLine(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Single measures for real (a tiny run) and its line parses back.
func TestSingleRoundTrip(t *testing.T) {
	c := DefaultConfig()
	c.Iters, c.Warmup, c.Batch = 1, 1, 4
	for _, mode := range []string{"train", "infer"} {
		c.Mode = mode
		m, err := Single(32, c)
		if err != nil {
			t.Fatal(err)
		}
		if m.ImgPerSec <= 0 || m.PeakRSSMB <= 0 {
			t.Fatalf("%s: measurement %+v", mode, m)
		}
		back, err := ParseLine(m.Line(mode, 32, c.Batch, c.Threads))
		if err != nil || back.Framework != "tailor" || back.P99Sec <= 0 {
			t.Fatalf("%s: line does not parse back: %v %+v", mode, err, back)
		}
	}
	var buf bytes.Buffer
	WriteTable(&buf, c, []Row{{Size: 32, Tailor: Measurement{ImgPerSec: 10, PeakRSSMB: 100}, GFLOPs: 1,
		Torch: map[string]Measurement{"nchw": {ImgPerSec: 20, PeakRSSMB: 50}}, TorchBest: "nchw", Ratio: 0.5,
		TailorRuns: []float64{9, 10, 12}, TorchRuns: []float64{20, 18, 25}}})
	for _, want := range []string{"| 10.0 (9–12) |", "| 20.0 (nchw; 18–25) |", "0.50x"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q: %s", want, buf.String())
		}
	}
}
