// Command netlab runs one scenario of a tailor cluster on an emulated
// network (package netlab) and prints its row: every role a process in a
// network namespace of its own, links shaped by token buckets. It needs
// root. Run from the module's root:
//
//	go run ./cmd/netlab --workers 16 --servers 4 --rate 10e9 --dilation 4
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tailorml/tailor/netlab"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := netlab.DefaultConfig()
	cfg.Prefix = fmt.Sprintf("tl%d", os.Getpid()%1000000)
	fs := flag.NewFlagSet("netlab", flag.ContinueOnError)
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "workers, each in a host of its own")
	fs.IntVar(&cfg.Servers, "servers", cfg.Servers, "parameter servers, each in a host of its own")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "every host's link rate in bit/s, each direction (undilated)")
	fs.Float64Var(&cfg.Dilation, "dilation", cfg.Dilation, "time dilation k: step time × k, link rates / k; rates are reported undilated")
	fs.DurationVar(&cfg.Step, "step", cfg.Step, "a worker's step time, undilated (tailor bench's median step; 0: real compute)")
	fs.StringVar(&cfg.Mode, "mode", cfg.Mode, "sync or async")
	fs.StringVar(&cfg.Compression, "compression", cfg.Compression, "none, fp16 or topk")
	fs.BoolVar(&cfg.Overlap, "overlap", cfg.Overlap, "push during backprop")
	fs.BoolVar(&cfg.SyncBN, "sync-bn", cfg.SyncBN, "synchronised BatchNorm (sync mode)")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "batch per worker")
	fs.IntVar(&cfg.Warmup, "warmup", cfg.Warmup, "steps before the window")
	fs.IntVar(&cfg.Steps, "steps", cfg.Steps, "steps in the window")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "longest run of the scenario")
	fs.StringVar(&cfg.Prefix, "prefix", cfg.Prefix, "name prefix of the lab's namespaces (at most 8 characters)")
	fs.StringVar(&cfg.Subnet, "subnet", cfg.Subnet, "the lab's /16, inside its namespaces")
	dir := fs.String("dir", "", "working folder: binaries, data, logs (default: a new temporary folder, removed after)")
	size := fs.Int("size", 64, "image size in px")
	train := fs.Int("train", 8192, "training images of the data set")
	source := fs.String("fashion", "", "Fashion-MNIST folder (default: the fashion package's)")
	openblas := fs.Bool("openblas", true, "build tailor with OpenBLAS")
	verbose := fs.Bool("v", false, "log the lab's progress")
	plotTo := fs.String("plot", "", "run nothing: plot the scaling efficiency of the rows in the files given as arguments (this command's output) to this PNG")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *plotTo != "" {
		return plotRows(*plotTo, fs.Args())
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *dir == "" {
		d, err := os.MkdirTemp("", "netlab-")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	root, err := os.Getwd()
	if err != nil {
		return fail(err)
	}
	bin := filepath.Join(*dir, "bin")
	if cfg.Tailor, cfg.Etcd, err = netlab.Build(ctx, root, bin, *openblas); err != nil {
		return fail(err)
	}
	if cfg.Data, err = netlab.Data(ctx, *source, filepath.Join(*dir, fmt.Sprintf("data-%d-%d", *size, *train)), *size, *train, log); err != nil {
		return fail(err)
	}
	// each scenario's logs stay in a folder of its own
	cfg.Dir = filepath.Join(*dir, "lab-"+cfg.Prefix)
	t0 := time.Now()
	row, err := netlab.Run(ctx, cfg, log)
	if err != nil {
		return fail(err)
	}
	fmt.Println(netlab.Header)
	fmt.Println(row.Markdown())
	fmt.Printf("window: %d steps in %v; scenario %v\n", row.Steps, row.Window.Round(time.Millisecond), time.Since(t0).Round(time.Second))
	return 0
}

// plotRows is --plot: the rows of files, drawn to png.
func plotRows(png string, files []string) int {
	var rows []netlab.Measured
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return fail(err)
		}
		r, err := netlab.ReadRows(f)
		f.Close()
		if err != nil {
			return fail(err)
		}
		rows = append(rows, r...)
	}
	if err := netlab.Plot(png, rows); err != nil {
		return fail(err)
	}
	fmt.Println("wrote", png)
	return 0
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "netlab:", err)
	return 1
}
