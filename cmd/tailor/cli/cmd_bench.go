package cli

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/tailorml/tailor/bench"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
)

func init() {
	register("bench", "measure training/inference speed, optionally against PyTorch", runBench)
}

func runBench(ctx context.Context, env *Env) int {
	c := bench.DefaultConfig()
	fs := newFlagSet(env, "bench", "", `
Measures SmallerVGGNet's training step (or inference) at batch 32: img/s, effective
GFLOP/s (a training step counts 3x the forward FLOPs) and peak RSS. Each
measurement runs in a fresh process. With --torch PATH, PyTorch's baseline
(shared/bench/torch_baseline.py) runs alternately with tailor, --pairs times per
size, in both of its layouts, and the ratio is against the faster one's median.`)
	sizes := fs.String("sizes", "32,64,96", "image sizes, comma-separated")
	fs.IntVar(&c.Batch, "batch", c.Batch, "batch size")
	fs.IntVar(&c.Classes, "classes", c.Classes, "labels")
	fs.StringVar(&c.Mode, "mode", c.Mode, "train, infer, exchange (push + pull of the whole model to --servers parameter servers on loopback), or serve (tailor serve on loopback at --concurrency, beside inference at --batch and at 1)")
	sc := bench.DefaultServe()
	concurrency := fs.String("concurrency", "1,8,32", "serve: concurrent clients, comma-separated")
	fs.DurationVar(&sc.Duration, "duration", sc.Duration, "serve: measured time per concurrency")
	fs.IntVar(&sc.MaxBatch, "max-batch", sc.MaxBatch, "serve: the server's largest batch")
	fs.DurationVar(&sc.MaxDelay, "max-delay", sc.MaxDelay, "serve: the server's longest wait for a batch")
	servers := fs.Int("servers", 1, "exchange: parameter servers")
	compression := fs.String("compression", "none", "exchange: push encoding (none, fp16, topk)")
	fs.IntVar(&c.Iters, "iters", c.Iters, "timed steps per measurement")
	fs.IntVar(&c.Warmup, "warmup", c.Warmup, "untimed steps first")
	fs.IntVar(&c.Threads, "threads", c.Threads, "compute threads")
	fs.IntVar(&c.Pairs, "pairs", c.Pairs, "measurements per size (alternating with PyTorch)")
	fs.StringVar(&c.Torch, "torch", "", "path of torch_baseline.py to compare with (needs python3-torch)")
	fs.StringVar(&c.Python, "python", c.Python, "python interpreter for --torch")
	single := fs.Bool("single", false, "measure once in this process and print one BASELINE line (used by the comparison)")
	if code, done := parse(env, fs); done {
		return code
	}
	c.Sizes = nil
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fail(env, fmt.Errorf("bad size %q", s))
		}
		c.Sizes = append(c.Sizes, n)
	}
	if c.Mode == "exchange" {
		return benchExchange(ctx, env, c, *servers, *compression)
	}
	if c.Mode == "serve" {
		sc.Concurrency = nil
		for _, s := range strings.Split(*concurrency, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				return fail(env, fmt.Errorf("bad concurrency %q", s))
			}
			sc.Concurrency = append(sc.Concurrency, n)
		}
		sc.Classes, sc.Threads = c.Classes, c.Threads
		return benchServe(ctx, env, c, sc, *single)
	}
	if *single {
		if len(c.Sizes) != 1 {
			return fail(env, fmt.Errorf("--single takes one size"))
		}
		m, err := bench.Single(c.Sizes[0], c)
		if err != nil {
			return fail(env, err)
		}
		fmt.Fprintln(env.Stdout, m.Line(c.Mode, c.Sizes[0], c.Batch, c.Threads))
		return 0
	}
	self, err := os.Executable()
	if err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "tailor bench: blas=%s core=%s mode=%s batch=%d threads=%d pairs=%d\n", model.BLAS, model.BLASCore(), c.Mode, c.Batch, c.Threads, c.Pairs)
	rows, err := bench.Compare(ctx, c, self, env.Stdout)
	if err != nil {
		return fail(env, err)
	}
	bench.WriteTable(env.Stdout, c, rows)
	return 0
}

// benchExchange measures push + pull of the whole model at each size.
func benchExchange(ctx context.Context, env *Env, c bench.Config, servers int, compression string) int {
	enc, err := wire.ParseEncoding(compression)
	if err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "tailor bench: mode=exchange servers=%d compression=%s rounds=%d (median round)\n", servers, enc, c.Iters)
	var rs []bench.ExchangeResult
	for _, size := range c.Sizes {
		ec := bench.DefaultExchange(size, c.Classes)
		ec.Servers, ec.Iters, ec.Warmup, ec.Compression = servers, c.Iters, c.Warmup, wire.Compression{Encoding: enc}
		r, err := bench.Exchange(ctx, ec)
		if err != nil {
			return fail(env, err)
		}
		rs = append(rs, r)
	}
	bench.WriteExchange(env.Stdout, rs)
	return 0
}

// benchServe measures tailor serve on loopback beside inference (or, with
// single, only the server, in this process).
func benchServe(ctx context.Context, env *Env, c bench.Config, sc bench.ServeConfig, single bool) int {
	if single {
		if len(c.Sizes) != 1 {
			return fail(env, fmt.Errorf("--single takes one size"))
		}
		sc.Size = c.Sizes[0]
		self, err := os.Executable()
		if err != nil {
			return fail(env, err)
		}
		sc.Server = self // the server in a process of its own, as clients meet it
		rs, err := bench.ServeSingle(ctx, sc)
		if err != nil {
			return fail(env, err)
		}
		for _, r := range rs {
			fmt.Fprintln(env.Stdout, r.Line(sc.Size))
		}
		return 0
	}
	self, err := os.Executable()
	if err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "tailor bench: blas=%s core=%s mode=serve batch=%d threads=%d pairs=%d duration=%s max_batch=%d max_delay=%s\n",
		model.BLAS, model.BLASCore(), c.Batch, c.Threads, c.Pairs, sc.Duration, sc.MaxBatch, sc.MaxDelay)
	rows, err := bench.CompareServe(ctx, c, sc, self, env.Stdout)
	if err != nil {
		return fail(env, err)
	}
	bench.WriteServeTable(env.Stdout, c, rows)
	return 0
}
