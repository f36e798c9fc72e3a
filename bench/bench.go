// Package bench measures the training step and inference of the net, and
// compares them with the PyTorch baseline (shared/bench/torch_baseline.py)
// run side by side, alternating, as ENGINEERING.md asks.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/optim"
)

// Config is one benchmark run.
type Config struct {
	Sizes   []int
	Batch   int
	Classes int
	Mode    string // "train" or "infer"
	Iters   int    // timed steps per measurement
	Warmup  int
	Threads int
	Pairs   int    // measurements per size (alternating with PyTorch if Torch is set)
	Torch   string // path of torch_baseline.py; empty: tailor only
	Python  string
	Layouts []string // PyTorch layouts to run: "nchw", "nhwc"
}

// DefaultConfig measures batch 32 training at 32, 64 and 96 px, 20 timed
// steps after 5 untimed ones in each process: a fresh process of either
// framework runs its first ten or so steps up to 2x slower than later ones
// (measured at 32 px inference: median 2,600 img/s over steps 3–7 against
// 4,500–5,000 over 50 steps for tailor, 2,000 against 3,100 for PyTorch).
func DefaultConfig() Config {
	return Config{Sizes: []int{32, 64, 96}, Batch: 32, Classes: 15, Mode: "train", Iters: 20, Warmup: 5, Threads: 2, Pairs: 5,
		Python: "/usr/bin/python3", Layouts: []string{"nchw", "nhwc"}}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if len(c.Sizes) == 0 || c.Batch < 1 || (c.Batch < 2 && c.Mode == "train") || c.Classes < 1 || c.Iters < 1 || c.Warmup < 0 || c.Pairs < 1 || c.Threads < 1 {
		return errors.New("bench: sizes, batch (≥ 2 to train), classes, iters, pairs and threads must be set")
	}
	if c.Mode != "train" && c.Mode != "infer" && c.Mode != "serve" {
		return fmt.Errorf("bench: mode %q: want train, infer or serve", c.Mode)
	}
	return nil
}

// Measurement is one process's result, in the baseline's format.
type Measurement struct {
	Framework string
	Layout    string
	ImgPerSec float64
	StepSec   float64
	P99Sec    float64 // 99th percentile step (tailor's lines only; 0 if not given)
	// CPUPerImg is the process's CPU time (user + system, every thread)
	// per image over the timed steps, seconds (tailor's lines only): on a
	// shared machine it says what the work costs, whatever share of the
	// cores the process got.
	CPUPerImg float64
	PeakRSSMB float64
}

// Single measures this process: it builds the net, runs Warmup then Iters
// steps and reports the median. Run it in a fresh process so the peak RSS is
// the benchmark's alone.
func Single(size int, c Config) (Measurement, error) {
	runtime.GOMAXPROCS(c.Threads)
	net, err := model.New(model.DefaultConfig(size, c.Classes), 0)
	if err != nil {
		return Measurement{}, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, c.Batch*net.Config().InputLen())
	for i := range x {
		x[i] = rng.Float32()
	}
	y := make([]float32, c.Batch*c.Classes)
	for i := range y {
		if rng.Float64() < 0.25 {
			y[i] = 1
		}
	}
	out := make([]float32, c.Batch*c.Classes)
	// The optimizer is part of a training step, as in the baseline (Adam).
	var sizes []int
	var params [][]float32
	for _, p := range net.Params() {
		sizes = append(sizes, len(p.Data))
		params = append(params, p.Data)
	}
	opt, err := optim.NewAdam(optim.DefaultAdam(0), sizes)
	if err != nil {
		return Measurement{}, err
	}
	step := func(i int) error {
		if c.Mode == "infer" {
			return net.Predict(x, c.Batch, out)
		}
		_, grads, err := net.TrainStep(x, y, c.Batch, model.StepOptions{Dropout: true, Step: uint64(i), BN: model.BNTrain})
		if err != nil {
			return err
		}
		return opt.Update(params, grads)
	}
	for i := 0; i < c.Warmup; i++ {
		if err := step(i); err != nil {
			return Measurement{}, err
		}
	}
	times := make([]float64, c.Iters)
	cpu0 := cpuTime()
	for i := range times {
		t0 := time.Now()
		if err := step(c.Warmup + i); err != nil {
			return Measurement{}, err
		}
		times[i] = time.Since(t0).Seconds()
	}
	cpu := (cpuTime() - cpu0).Seconds() / float64(c.Iters*c.Batch)
	med := median(times)
	sorted := append([]float64(nil), times...)
	sort.Float64s(sorted)
	p99 := sorted[min(len(sorted)-1, len(sorted)*99/100)]
	return Measurement{Framework: "tailor", Layout: "nchw", ImgPerSec: float64(c.Batch) / med, StepSec: med, P99Sec: p99, CPUPerImg: cpu, PeakRSSMB: peakRSSMB()}, nil
}

// Line formats a measurement like the baseline's output line.
func (m Measurement) Line(mode string, size, batch, threads int) string {
	line := fmt.Sprintf("BASELINE framework=%s mode=%s size=%d batch=%d threads=%d layout=%s img_per_s=%.2f median_step_s=%.4f peak_rss_mb=%.0f",
		m.Framework, mode, size, batch, threads, m.Layout, m.ImgPerSec, m.StepSec, m.PeakRSSMB)
	if m.P99Sec > 0 {
		line += fmt.Sprintf(" p99_step_s=%.6f", m.P99Sec)
	}
	if m.CPUPerImg > 0 {
		line += fmt.Sprintf(" cpu_s_per_img=%.6f", m.CPUPerImg)
	}
	return line
}

func peakRSSMB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// Row is the summary of one size.
type Row struct {
	Size                  int
	Tailor                Measurement // medians
	Torch                 map[string]Measurement
	GFLOPs                float64 // tailor's effective GFLOP/s
	TorchBest             string  // faster PyTorch layout
	Ratio                 float64 // tailor img/s / faster PyTorch img/s
	TailorRuns, TorchRuns []float64
}

// Compare runs `self bench --single` and, if set, the PyTorch baseline in
// alternation, Pairs times per size, and summarises medians and ratios.
func Compare(ctx context.Context, c Config, self string, log io.Writer) ([]Row, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var rows []Row
	for _, size := range c.Sizes {
		row := Row{Size: size, Torch: map[string]Measurement{}}
		var ours []Measurement
		theirs := map[string][]Measurement{}
		for p := 0; p < c.Pairs; p++ {
			args := []string{"bench", "--single", "--mode", c.Mode, "--sizes", strconv.Itoa(size), "--batch", strconv.Itoa(c.Batch),
				"--classes", strconv.Itoa(c.Classes), "--iters", strconv.Itoa(c.Iters), "--warmup", strconv.Itoa(c.Warmup), "--threads", strconv.Itoa(c.Threads)}
			m, err := runLine(ctx, log, self, args...)
			if err != nil {
				return nil, err
			}
			ours = append(ours, m)
			if c.Torch == "" {
				continue
			}
			for _, layout := range c.Layouts {
				targs := []string{c.Torch, "--size", strconv.Itoa(size), "--batch", strconv.Itoa(c.Batch), "--classes", strconv.Itoa(c.Classes),
					"--threads", strconv.Itoa(c.Threads), "--mode", c.Mode, "--iters", strconv.Itoa(c.Iters), "--warmup", strconv.Itoa(c.Warmup)}
				if layout == "nhwc" {
					targs = append(targs, "--channels-last")
				}
				m, err := runLine(ctx, log, c.Python, targs...)
				if err != nil {
					return nil, err
				}
				theirs[layout] = append(theirs[layout], m)
			}
		}
		row.Tailor, row.TailorRuns = summarise(ours)
		fwd := model.DefaultConfig(size, c.Classes).ForwardFLOPs()
		mult := 3.0
		if c.Mode == "infer" {
			mult = 1
		}
		row.GFLOPs = row.Tailor.ImgPerSec * fwd * mult / 1e9
		for layout, ms := range theirs {
			m, runs := summarise(ms)
			row.Torch[layout] = m
			if row.TorchBest == "" || m.ImgPerSec > row.Torch[row.TorchBest].ImgPerSec {
				row.TorchBest, row.TorchRuns = layout, runs
			}
		}
		if row.TorchBest != "" {
			row.Ratio = row.Tailor.ImgPerSec / row.Torch[row.TorchBest].ImgPerSec
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func summarise(ms []Measurement) (Measurement, []float64) {
	var ips, step, p99, cpu, rss []float64
	for _, m := range ms {
		ips = append(ips, m.ImgPerSec)
		step = append(step, m.StepSec)
		p99 = append(p99, m.P99Sec)
		cpu = append(cpu, m.CPUPerImg)
		rss = append(rss, m.PeakRSSMB)
	}
	out := ms[0]
	out.ImgPerSec, out.StepSec, out.P99Sec, out.CPUPerImg, out.PeakRSSMB = median(ips), median(step), median(p99), median(cpu), median(rss)
	return out, ips
}

func runLine(ctx context.Context, log io.Writer, name string, args ...string) (Measurement, error) {
	cmd := execCommand(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Measurement{}, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "BASELINE ") {
			continue
		}
		if log != nil {
			fmt.Fprintln(log, line)
		}
		return ParseLine(line)
	}
	return Measurement{}, fmt.Errorf("%s printed no BASELINE line: %s", name, out)
}

// execCommand is a measuring child process (OpenMP threads that sleep when
// idle, as PyTorch's baseline wants).
func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "OMP_WAIT_POLICY=PASSIVE")
	return cmd
}

// ParseLine reads a "BASELINE k=v ..." line.
func ParseLine(line string) (Measurement, error) {
	var m Measurement
	for _, f := range strings.Fields(strings.TrimPrefix(line, "BASELINE ")) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "framework":
			m.Framework = v
		case "layout":
			m.Layout = v
		case "img_per_s":
			m.ImgPerSec, err = strconv.ParseFloat(v, 64)
		case "median_step_s":
			m.StepSec, err = strconv.ParseFloat(v, 64)
		case "p99_step_s":
			m.P99Sec, err = strconv.ParseFloat(v, 64)
		case "cpu_s_per_img":
			m.CPUPerImg, err = strconv.ParseFloat(v, 64)
		case "peak_rss_mb":
			m.PeakRSSMB, err = strconv.ParseFloat(v, 64)
		}
		if err != nil {
			return m, fmt.Errorf("bad %s in %q: %w", k, line, err)
		}
	}
	if m.Framework == "" || m.ImgPerSec <= 0 {
		return m, fmt.Errorf("incomplete line %q", line)
	}
	return m, nil
}

// WriteTable prints the rows as a Markdown table.
func WriteTable(w io.Writer, c Config, rows []Row) {
	fmt.Fprintf(w, "| size | mode | tailor img/s (range) | tailor GFLOP/s | tailor peak RSS MB | PyTorch img/s (layout; range) | PyTorch peak RSS MB | ratio |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		torch, trss, ratio := "-", "-", "-"
		if r.TorchBest != "" {
			t := r.Torch[r.TorchBest]
			torch = fmt.Sprintf("%.1f (%s%s)", t.ImgPerSec, r.TorchBest, spread("; ", r.TorchRuns))
			trss = fmt.Sprintf("%.0f", t.PeakRSSMB)
			ratio = fmt.Sprintf("%.2fx", r.Ratio)
		}
		ours := fmt.Sprintf("%.1f", r.Tailor.ImgPerSec)
		if s := spread("", r.TailorRuns); s != "" {
			ours += " (" + s + ")"
		}
		fmt.Fprintf(w, "| %d | %s | %s | %.1f | %.0f | %s | %s | %s |\n", r.Size, c.Mode, ours, r.GFLOPs, r.Tailor.PeakRSSMB, torch, trss, ratio)
	}
}

// spread is "min–max" of several measurements after prefix, or "" for
// fewer than two.
func spread(prefix string, v []float64) string {
	if len(v) < 2 {
		return ""
	}
	return fmt.Sprintf("%s%.0f–%.0f", prefix, slices.Min(v), slices.Max(v))
}
