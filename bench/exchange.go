package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/paramserver"
)

// ExchangeConfig is a parameter-exchange measurement: one worker pushes the
// whole model's gradient to Servers parameter servers and pulls the new
// weights back, on loopback, in sync mode with the Adam update.
type ExchangeConfig struct {
	Size, Classes int // the net: image size and labels
	Servers       int
	Iters         int // timed push + pull rounds
	Warmup        int
	ChunkBytes    int // 0: the wire default
	Compression   wire.Compression
}

// DefaultExchange is one server, 20 rounds after 3 untimed.
func DefaultExchange(size, classes int) ExchangeConfig {
	return ExchangeConfig{Size: size, Classes: classes, Servers: 1, Iters: 20, Warmup: 3}
}

// Validate checks the configuration.
func (c ExchangeConfig) Validate() error {
	if c.Size < 8 || c.Classes < 1 || c.Servers < 1 || c.Iters < 1 || c.Warmup < 0 {
		return fmt.Errorf("exchange bench: size %d, classes %d, servers %d, iters %d, warmup %d: want ≥ 8, ≥ 1, ≥ 1, ≥ 1, ≥ 0",
			c.Size, c.Classes, c.Servers, c.Iters, c.Warmup)
	}
	return nil
}

// ExchangeResult is one measurement.
type ExchangeResult struct {
	Size, Servers int
	Floats        int // model floats, each way
	Encoding      wire.Encoding
	PushBytes     float64 // payload bytes of one push, after compression
	MBps          float64 // model bytes (float32, both directions) per wall second, median round
	CPUms         float64 // process CPU (client and servers) per round
	RoundMs       float64 // median wall time of one push + pull
}

// Exchange runs the servers and the client in this process on 127.0.0.1.
func Exchange(ctx context.Context, c ExchangeConfig) (ExchangeResult, error) {
	if err := c.Validate(); err != nil {
		return ExchangeResult{}, err
	}
	spec, err := netspec.Spec(model.DefaultConfig(c.Size, c.Classes))
	if err != nil {
		return ExchangeResult{}, err
	}
	const run, worker = "bench", "w0"
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var addrs []string
	for i := range c.Servers {
		cfg := paramserver.DefaultConfig(run, spec)
		cfg.Index, cfg.Servers, cfg.ListenAddr, cfg.Encoding = i, c.Servers, "127.0.0.1:0", c.Compression.Encoding
		s, err := paramserver.New(cfg, paramserver.NewStaticMembers(worker))
		if err != nil {
			return ExchangeResult{}, err
		}
		defer s.Close()
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return ExchangeResult{}, err
		}
		wg.Go(func() { _ = s.Serve(ctx, lis) })
		addrs = append(addrs, lis.Addr().String())
	}
	comp := c.Compression
	if comp.Encoding == wire.EncodingTopK && comp.TopK == 0 {
		comp.TopK = wire.DefaultTopK
	}
	cl, err := wire.NewClient(wire.ClientConfig{RunID: run, WorkerID: worker, Addrs: addrs, Spec: spec, ChunkBytes: c.ChunkBytes, Compression: comp})
	if err != nil {
		return ExchangeResult{}, err
	}
	defer cl.Close()
	fill := func(v float32) [][]float32 {
		ts := make([][]float32, len(spec))
		for i, t := range spec {
			ts[i] = make([]float32, t.Size)
			for j := range ts[i] {
				ts[i][j] = v * float32(j%7+1) * 1e-3
			}
		}
		return ts
	}
	if err := cl.Init(ctx, fill(1)); err != nil {
		return ExchangeResult{}, fmt.Errorf("exchange bench: init: %w", err)
	}
	grad, into := fill(2), fill(0)
	var rounds []float64
	var cpu time.Duration
	var pushed uint64
	for step := range int64(c.Warmup + c.Iters) {
		t0, cpu0, b0 := time.Now(), cpuTime(), cl.PushedBytes()
		if _, err := cl.Push(ctx, step, step, grad); err != nil {
			return ExchangeResult{}, fmt.Errorf("exchange bench: push %d: %w", step, err)
		}
		if _, err := cl.Pull(ctx, step+1, into); err != nil {
			return ExchangeResult{}, fmt.Errorf("exchange bench: pull %d: %w", step, err)
		}
		if step >= int64(c.Warmup) {
			rounds = append(rounds, time.Since(t0).Seconds())
			cpu += cpuTime() - cpu0
			pushed += cl.PushedBytes() - b0
		}
	}
	bytes := float64(2 * 4 * spec.Total())
	r := median(rounds)
	return ExchangeResult{Size: c.Size, Servers: c.Servers, Floats: spec.Total(), Encoding: c.Compression.Encoding,
		PushBytes: float64(pushed) / float64(c.Iters), MBps: bytes / 1e6 / r,
		CPUms: cpu.Seconds() * 1e3 / float64(c.Iters), RoundMs: r * 1e3}, nil
}

// WriteExchange prints results as a Markdown table.
func WriteExchange(w io.Writer, rs []ExchangeResult) {
	fmt.Fprintln(w, "| size | servers | push encoding | model MB each way | MB pushed | push + pull MB/s (model bytes) | ms per push + pull | CPU ms per push + pull |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %d | %s | %.1f | %.1f | %.0f | %.1f | %.1f |\n", r.Size, r.Servers, r.Encoding, float64(4*r.Floats)/1e6,
			r.PushBytes/1e6, r.MBps, r.RoundMs, r.CPUms)
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
