package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/serve"
)

// ServeConfig is a serving benchmark: `tailor serve`'s server in this
// process on a loopback port, driven by clients at each concurrency.
type ServeConfig struct {
	Size, Classes, Threads int
	Concurrency            []int
	Warmup, Duration       time.Duration // per concurrency
	MaxBatch               int
	MaxDelay               time.Duration
	Images                 int // distinct photos the clients send, Size×Size PNGs
	// Server, if set, is the tailor binary: the server runs as `tailor
	// serve` in a process of its own, as clients meet it. Otherwise it
	// runs in this process, beside the clients.
	Server string
}

// DefaultServe measures 64 px at concurrency 1, 8 and 32, 1 s of warm-up
// and 5 s measured each, with the server's default batching.
func DefaultServe() ServeConfig {
	d := serve.DefaultConfig()
	return ServeConfig{Size: 64, Classes: 15, Threads: 2, Concurrency: []int{1, 8, 32}, Warmup: time.Second, Duration: 5 * time.Second,
		MaxBatch: d.MaxBatch, MaxDelay: d.MaxDelay, Images: 64}
}

// ServeResult is one concurrency's measurement.
type ServeResult struct {
	Concurrency int
	Requests    int
	ImgPerSec   float64
	P50, P99    time.Duration
	MeanBatch   float64 // images per batch the net ran
	Errors      int
	// CPUPerImg is the CPU time per answered image of the server and the
	// clients together (both processes), seconds; ServerCPUPerImg the
	// server's alone (0 when it runs in the clients' process).
	CPUPerImg, ServerCPUPerImg float64
}

// Line formats a result as one parseable line.
func (r ServeResult) Line(size int) string {
	return fmt.Sprintf("SERVE size=%d concurrency=%d requests=%d errors=%d img_per_s=%.2f p50_ms=%.3f p99_ms=%.3f mean_batch=%.2f cpu_s_per_img=%.6f server_cpu_s_per_img=%.6f",
		size, r.Concurrency, r.Requests, r.Errors, r.ImgPerSec, ms(r.P50), ms(r.P99), r.MeanBatch, r.CPUPerImg, r.ServerCPUPerImg)
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// ParseServeLine reads a SERVE line.
func ParseServeLine(line string) (ServeResult, error) {
	var r ServeResult
	for _, f := range strings.Fields(strings.TrimPrefix(line, "SERVE ")) {
		k, v, _ := strings.Cut(f, "=")
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return r, fmt.Errorf("bad %s in %q: %w", k, line, err)
		}
		switch k {
		case "concurrency":
			r.Concurrency = int(x)
		case "requests":
			r.Requests = int(x)
		case "errors":
			r.Errors = int(x)
		case "img_per_s":
			r.ImgPerSec = x
		case "p50_ms":
			r.P50 = time.Duration(x * 1e6)
		case "p99_ms":
			r.P99 = time.Duration(x * 1e6)
		case "mean_batch":
			r.MeanBatch = x
		case "cpu_s_per_img":
			r.CPUPerImg = x
		case "server_cpu_s_per_img":
			r.ServerCPUPerImg = x
		}
	}
	if r.Concurrency < 1 || r.Requests < 1 {
		return r, fmt.Errorf("incomplete line %q", line)
	}
	return r, nil
}

// ServeSingle runs the server with a net of random weights and drives it
// at each concurrency with one photo per request (POST /v1/predict).
func ServeSingle(ctx context.Context, c ServeConfig) ([]ServeResult, error) {
	if len(c.Concurrency) == 0 || c.Images < 1 || c.Duration <= 0 || c.Threads < 1 {
		return nil, errors.New("bench: serve needs concurrencies, images, a duration and threads")
	}
	runtime.GOMAXPROCS(c.Threads)
	net1, err := model.New(model.DefaultConfig(c.Size, c.Classes), 1)
	if err != nil {
		return nil, err
	}
	b := &model.Bundle{Net: net1, Mean: []float32{0.5, 0.5, 0.5}, Std: []float32{0.25, 0.25, 0.25}}
	for i := range c.Classes {
		b.Labels = append(b.Labels, "label"+strconv.Itoa(i))
		b.Thresholds = append(b.Thresholds, 0.5)
	}
	queue := max(serve.DefaultConfig().QueueDepth, 2*slices.Max(c.Concurrency))
	var base string
	serverCPU := func() time.Duration { return 0 } // in this process: counted in cpuTime
	if c.Server != "" {
		addr, pid, stop, err := startServer(ctx, c, b, queue)
		if err != nil {
			return nil, err
		}
		defer stop()
		base = addr
		serverCPU = func() time.Duration { return processCPU(pid) }
	} else {
		addr, stop, err := serveHere(ctx, c, b, queue)
		if err != nil {
			return nil, err
		}
		defer stop()
		base = addr
	}
	photos := benchPhotos(c.Size, c.Images)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * slices.Max(c.Concurrency)}}
	var out []ServeResult
	for _, conc := range c.Concurrency {
		if _, err := drive(ctx, client, base, photos, conc, c.Warmup); err != nil {
			return nil, err
		}
		before, err := batchCounts(client, base)
		if err != nil {
			return nil, err
		}
		own0, srv0 := cpuTime(), serverCPU()
		r, err := drive(ctx, client, base, photos, conc, c.Duration)
		if err != nil {
			return nil, err
		}
		own, srv := cpuTime()-own0, serverCPU()-srv0
		r.CPUPerImg = (own + srv).Seconds() / float64(r.Requests)
		r.ServerCPUPerImg = srv.Seconds() / float64(r.Requests)
		after, err := batchCounts(client, base)
		if err != nil {
			return nil, err
		}
		if n := after[0] - before[0]; n > 0 {
			r.MeanBatch = (after[1] - before[1]) / n
		}
		out = append(out, r)
	}
	return out, nil
}

// serveHere runs the server in this process; stop stops it.
func serveHere(ctx context.Context, c ServeConfig, b *model.Bundle, queue int) (string, func(), error) {
	m, err := serve.NewModel(b, "bench")
	if err != nil {
		return "", nil, err
	}
	cfg := serve.DefaultConfig()
	cfg.MaxBatch, cfg.MaxDelay, cfg.QueueDepth = c.MaxBatch, c.MaxDelay, queue
	s, err := serve.New(cfg, nil)
	if err != nil {
		return "", nil, err
	}
	if err := s.SetModel(m); err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- s.Serve(sctx, ln) }()
	return "http://" + ln.Addr().String(), func() {
		cancel()
		<-served
	}, nil
}

// startServer runs `tailor serve` on the bundle, saved to a temporary
// file, on a free loopback port, and waits until it is ready; stop sends
// it SIGTERM and waits for it.
func startServer(ctx context.Context, c ServeConfig, b *model.Bundle, queue int) (string, int, func(), error) {
	dir, err := os.MkdirTemp("", "tailor-bench-serve-")
	if err != nil {
		return "", 0, nil, err
	}
	path := filepath.Join(dir, "model.tailor")
	if err := b.Save(path); err != nil {
		os.RemoveAll(dir)
		return "", 0, nil, err
	}
	cmd := exec.CommandContext(ctx, c.Server, "serve", "--model", path, "--listen", "127.0.0.1:0", "--max-batch", strconv.Itoa(c.MaxBatch),
		"--max-delay", c.MaxDelay.String(), "--queue", strconv.Itoa(queue), "--recheck", "0")
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(c.Threads))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", 0, nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
	sc := bufio.NewScanner(out)
	var base string
	if sc.Scan() {
		if _, url, ok := strings.Cut(sc.Text(), " on "); ok {
			base = strings.TrimSuffix(url, "/")
		}
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	if base == "" {
		stop()
		return "", 0, nil, fmt.Errorf("bench: tailor serve did not say where it listens: %s", stderr.String())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base, cmd.Process.Pid, stop, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", 0, nil, fmt.Errorf("bench: tailor serve not ready: %v: %s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processCPU is a process's CPU time so far (Linux /proc), 0 if unknown.
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// fields after the command name (which may hold spaces) in parentheses
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime, clock ticks (100 a second)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// drive runs conc clients for d and measures what they got.
func drive(ctx context.Context, client *http.Client, base string, photos [][]byte, conc int, d time.Duration) (ServeResult, error) {
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var firstErr error
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t0 := time.Now()
	var wg sync.WaitGroup
	for k := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; dctx.Err() == nil; i += conc {
				start := time.Now()
				err := predictOnce(client, base, photos[i%len(photos)])
				el := time.Since(start)
				if dctx.Err() != nil && err != nil {
					return // cut off by the end of the window
				}
				mu.Lock()
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					lat = append(lat, el)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	if len(lat) == 0 {
		return ServeResult{}, fmt.Errorf("bench: no request answered at concurrency %d: %v", conc, firstErr)
	}
	slices.Sort(lat)
	return ServeResult{Concurrency: conc, Requests: len(lat), Errors: errs, ImgPerSec: float64(len(lat)) / el.Seconds(),
		P50: lat[len(lat)/2], P99: lat[min(len(lat)-1, len(lat)*99/100)]}, nil
}

func predictOnce(client *http.Client, base string, photo []byte) error {
	resp, err := client.Post(base+"/v1/predict", "image/png", bytes.NewReader(photo))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// batchCounts reads the server's batch count and images from /metrics.
func batchCounts(client *http.Client, base string) ([2]float64, error) {
	var out [2]float64
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "tailor_serve_batch_size_count":
			out[0], _ = strconv.ParseFloat(f[1], 64)
		case "tailor_serve_batch_size_sum":
			out[1], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return out, sc.Err()
}

// benchPhotos are n size×size PNGs of smooth random colour fields.
func benchPhotos(size, n int) [][]byte {
	rng := rand.New(rand.NewPCG(3, 4))
	var out [][]byte
	for range n {
		img := image.NewRGBA(image.Rect(0, 0, size, size))
		r0, g0, b0 := rng.IntN(200), rng.IntN(200), rng.IntN(200)
		for y := range size {
			for x := range size {
				img.Set(x, y, color.RGBA{uint8(r0 + x/2), uint8(g0 + y/2), uint8(b0 + rng.IntN(40)), 255})
			}
		}
		var buf bytes.Buffer
		_ = png.Encode(&buf, img)
		out = append(out, buf.Bytes())
	}
	return out
}

// ServeRow is one concurrency's medians over the pairs, beside inference
// measured in the same run.
type ServeRow struct {
	Size        int
	Serve       ServeResult // medians
	Runs        []float64   // img/s of each pair
	InferBatch  Measurement // `bench --mode infer` at the comparison batch
	InferSingle Measurement // one image at a time
}

// CompareServe runs, Pairs times, fresh processes of `self bench --single`:
// inference at c.Batch, inference of one image, and the server at every
// concurrency; it returns the medians per concurrency.
func CompareServe(ctx context.Context, c Config, sc ServeConfig, self string, log io.Writer) ([]ServeRow, error) {
	var rows []ServeRow
	for _, size := range c.Sizes {
		var inferB, infer1 []Measurement
		byConc := map[int][]ServeResult{}
		for p := 0; p < c.Pairs; p++ {
			for _, batch := range []int{c.Batch, 1} {
				iters := c.Iters
				if batch == 1 {
					iters = max(iters, 200) // enough steps for a 99th percentile
				}
				args := []string{"bench", "--single", "--mode", "infer", "--sizes", strconv.Itoa(size), "--batch", strconv.Itoa(batch),
					"--classes", strconv.Itoa(c.Classes), "--iters", strconv.Itoa(iters), "--warmup", strconv.Itoa(c.Warmup), "--threads", strconv.Itoa(c.Threads)}
				m, err := runLine(ctx, log, self, args...)
				if err != nil {
					return nil, err
				}
				if batch == 1 {
					infer1 = append(infer1, m)
				} else {
					inferB = append(inferB, m)
				}
			}
			var conc []string
			for _, k := range sc.Concurrency {
				conc = append(conc, strconv.Itoa(k))
			}
			args := []string{"bench", "--single", "--mode", "serve", "--sizes", strconv.Itoa(size), "--classes", strconv.Itoa(c.Classes),
				"--threads", strconv.Itoa(c.Threads), "--concurrency", strings.Join(conc, ","), "--duration", sc.Duration.String(),
				"--max-batch", strconv.Itoa(sc.MaxBatch), "--max-delay", sc.MaxDelay.String()}
			rs, err := runServeLines(ctx, log, self, args...)
			if err != nil {
				return nil, err
			}
			for _, r := range rs {
				byConc[r.Concurrency] = append(byConc[r.Concurrency], r)
			}
		}
		mb, _ := summarise(inferB)
		m1, _ := summarise(infer1)
		for _, k := range sc.Concurrency {
			rs := byConc[k]
			row := ServeRow{Size: size, InferBatch: mb, InferSingle: m1, Serve: ServeResult{Concurrency: k}}
			var ips, p50, p99, mbatch, cpu, scpu []float64
			for _, r := range rs {
				cpu = append(cpu, r.CPUPerImg)
				scpu = append(scpu, r.ServerCPUPerImg)
				ips = append(ips, r.ImgPerSec)
				p50 = append(p50, float64(r.P50))
				p99 = append(p99, float64(r.P99))
				mbatch = append(mbatch, r.MeanBatch)
				row.Serve.Requests += r.Requests
				row.Serve.Errors += r.Errors
			}
			row.Runs = ips
			row.Serve.ImgPerSec, row.Serve.P50, row.Serve.P99, row.Serve.MeanBatch = median(ips), time.Duration(median(p50)), time.Duration(median(p99)), median(mbatch)
			row.Serve.CPUPerImg, row.Serve.ServerCPUPerImg = median(cpu), median(scpu)
			rows = append(rows, row)
		}
	}
	return rows, nil
}

func runServeLines(ctx context.Context, log io.Writer, name string, args ...string) ([]ServeResult, error) {
	cmd := execCommand(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	var rs []ServeResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "SERVE ") {
			if log != nil {
				fmt.Fprintln(log, line)
			}
			r, err := ParseServeLine(line)
			if err != nil {
				return nil, err
			}
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("%s printed no SERVE line: %s", name, out)
	}
	return rs, nil
}

// WriteServeTable prints the rows as a Markdown table with the targets'
// ratios: throughput against inference at the comparison batch, p99
// against one image's inference time.
func WriteServeTable(w io.Writer, c Config, rows []ServeRow) {
	fmt.Fprintf(w, "| size | concurrency | serve img/s (range) | p50 ms | p99 ms | mean batch | infer img/s, batch %d | serve / infer | infer ms, 1 image (p99) | serve p99 / 1 image | CPU ms per image: server + clients, server, infer batch %d | CPU: infer / server |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n", c.Batch, c.Batch)
	for _, r := range rows {
		one := r.InferSingle.StepSec * 1e3
		cpuRatio := "-"
		if r.Serve.ServerCPUPerImg > 0 && r.InferBatch.CPUPerImg > 0 {
			cpuRatio = fmt.Sprintf("%.2fx", r.InferBatch.CPUPerImg/r.Serve.ServerCPUPerImg)
		}
		fmt.Fprintf(w, "| %d | %d | %.1f%s | %.2f | %.2f | %.1f | %.1f | %.2fx | %.2f (%.2f) | %.2fx | %.2f, %.2f, %.2f | %s |\n", r.Size, r.Serve.Concurrency, r.Serve.ImgPerSec, spread(" (", r.Runs)+closeParen(r.Runs),
			ms(r.Serve.P50), ms(r.Serve.P99), r.Serve.MeanBatch, r.InferBatch.ImgPerSec, r.Serve.ImgPerSec/r.InferBatch.ImgPerSec, one, r.InferSingle.P99Sec*1e3, ms(r.Serve.P99)/one,
			r.Serve.CPUPerImg*1e3, r.Serve.ServerCPUPerImg*1e3, r.InferBatch.CPUPerImg*1e3, cpuRatio)
	}
}

func closeParen(v []float64) string {
	if len(v) < 2 {
		return ""
	}
	return ")"
}
