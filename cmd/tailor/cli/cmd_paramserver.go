package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/paramserver"
)

func init() {
	registerDraining("paramserver", "serve one parameter server of a distributed training run", runParamServer)
}

func runParamServer(ctx context.Context, env *Env) int {
	cfg := paramserver.DefaultConfig("", nil)
	var (
		workers, initFrom, metricsAddr string
		size, labels, epochs           int
		seed                           uint64
		showPlan, indexFromHost        bool
	)
	fs := newFlagSet(env, "paramserver", "--run ID --workers W1,W2,... --labels N", `
Serves server --index of --servers parameter servers for SmallerVGGNet at
--size px with --labels outputs: holds its share of the weights (the plan cuts
the concatenated tensors into equal ranges), applies the workers' gradients with
Adam (--mode sync, async or ssp) and serves the weights over gRPC. BatchNorm
running statistics travel as untrained "state" tensors. Initial weights come
from --seed (every server of the run must use the same), from a model file, or
from an Init call (--init rpc). Prometheus metrics are served at
--metrics-listen/metrics. Standalone, the workers are a fixed list (--workers).
With --etcd, it is server --index of a cluster run instead, and takes everything
else (model, mode, workers, step decisions) from the run.`)
	fs.IntVar(&cfg.Index, "index", cfg.Index, "this server's index")
	fs.BoolVar(&indexFromHost, "index-from-hostname", false, "take --index from the number at the end of the host name, after its last dash (a StatefulSet pod's name: tailor-ps-3 is server 3)")
	fs.IntVar(&cfg.Servers, "servers", cfg.Servers, "number of parameter servers")
	fs.StringVar(&cfg.ListenAddr, "listen", cfg.ListenAddr, "gRPC listen address")
	fs.Var(&cfg.Mode, "mode", "update rule: sync, async or ssp")
	fs.IntVar(&cfg.Staleness, "staleness", cfg.Staleness, "ssp: steps a worker may run ahead of the slowest")
	fs.DurationVar(&cfg.StepDeadline, "step-deadline", cfg.StepDeadline, "sync: apply a step this long after its first gradient even if some are missing")
	fs.IntVar(&cfg.SyncQuorum, "quorum", 0, "sync: apply a step once this many gradients are in (0: all workers)")
	fs.StringVar(&workers, "workers", "", "comma-separated worker ids allowed to push (required)")
	fs.IntVar(&size, "size", 64, "input size in pixels")
	fs.IntVar(&labels, "labels", 0, "number of labels (required)")
	cfg.Adam.AddFlags(fs)
	fs.IntVar(&epochs, "decay-epochs", 0, "decay the learning rate as lr/(1+lr/N·step), the tutorial's with N epochs (0: no decay)")
	fs.Uint64Var(&seed, "seed", 1, "run seed of the initial weights (with --init seed)")
	fs.StringVar(&initFrom, "init", "seed", `initial weights: "seed", "rpc" (wait for an Init call) or a model file`)
	fs.BoolVar(&showPlan, "plan", false, "print the partition plan and exit")
	var cf clusterFlags
	cf.add(fs)
	if code, done := parse(env, fs); done {
		return code
	}
	if indexFromHost {
		index, err := indexFromHostname(fs, hostname)
		if err != nil {
			fmt.Fprintf(env.Stderr, "tailor paramserver: %v\n", err)
			return 2
		}
		cfg.Index = index
	}
	if len(cf.endpoints()) > 0 && !showPlan {
		// cluster mode: everything else comes from the run in etcd
		if !cf.check(env, "paramserver") {
			return 2
		}
		listen := cfg.ListenAddr
		if listen == paramserver.DefaultConfig("", nil).ListenAddr {
			listen = "127.0.0.1:0"
		}
		return runParamServerNode(ctx, env, cf, cfg.Index, listen)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "tailor paramserver: unexpected arguments %q\n", fs.Args())
		return 2
	}
	// standalone, a signal stops the server at once: it has no run to
	// checkpoint for
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-env.Drain():
			cancel()
		case <-ctx.Done():
		}
	}()
	if labels < 1 {
		fmt.Fprintln(env.Stderr, "tailor paramserver: --labels is required")
		return 2
	}
	mnet, err := model.New(model.DefaultConfig(size, labels), seed)
	if err != nil {
		return fail(env, err)
	}
	spec, weights := netspec.Tensors(mnet)
	cfg.Spec = spec
	if showPlan {
		return printPlan(env, spec, cfg.Servers)
	}
	cfg.RunID, metricsAddr = cf.run, cf.metrics
	if cfg.RunID == "" || workers == "" {
		fmt.Fprintln(env.Stderr, "tailor paramserver: --run and --workers are required")
		return 2
	}
	if epochs > 0 {
		cfg.Adam.Decay = cfg.Adam.LR / float64(epochs)
	}
	cfg.Logger = env.Log
	if cfg.TLS, err = cf.sec.wireTLS(env.Log); err != nil {
		return fail(env, err)
	}
	members := paramserver.NewStaticMembers(strings.Split(workers, ",")...)
	srv, err := paramserver.New(cfg, members)
	if err != nil {
		return fail(env, err)
	}
	defer srv.Close()
	switch initFrom {
	case "rpc":
		env.Log.Info("waiting for initial weights (Init)")
	case "seed":
		err = srv.SetWeights(0, weights)
	default:
		var b *model.Bundle
		if b, err = model.Load(initFrom); err == nil {
			fileSpec, w := netspec.Tensors(b.Net)
			if fileSpec.Total() != spec.Total() || len(fileSpec) != len(spec) {
				err = fmt.Errorf("model file %s is not a %d px, %d-label SmallerVGGNet", initFrom, size, labels)
			} else {
				err = srv.SetWeights(0, w)
			}
		}
	}
	if err != nil {
		return fail(env, err)
	}
	if metricsAddr != "" {
		lis, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return fail(env, fmt.Errorf("metrics: %w", err))
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.MetricsHandler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				env.Log.Error("metrics server", "err", err)
			}
		}()
		defer hs.Close()
		env.Log.Info("metrics", "addr", lis.Addr().String())
	}
	if err := srv.ListenAndServe(ctx); err != nil {
		return fail(env, err)
	}
	return 0
}

// netTensors is the net's parameter-server spec and its current values:
// the trainable tensors in order, then each BatchNorm layer's running mean
// and variance as State tensors (the model file's order). Workers must
// build the same spec.
func printPlan(env *Env, spec wire.Spec, servers int) int {
	plan, err := wire.NewPlan(spec, servers)
	if err != nil {
		return fail(env, err)
	}
	fmt.Fprintf(env.Stdout, "%d tensors, %d floats (%.1f MB), %d servers, plan %016x\n",
		len(spec), spec.Total(), float64(spec.Total())*4/1e6, servers, plan.Fingerprint())
	for s := range servers {
		fmt.Fprintf(env.Stdout, "server %d: %d floats (%.1f MB)\n", s, plan.ServerLen(s), float64(plan.ServerLen(s))*4/1e6)
		for _, p := range plan.ServerParts(s) {
			fmt.Fprintf(env.Stdout, "  %-12s %-5s [%d, %d) of %d\n", p.Name, p.Kind, p.Offset, p.Offset+p.Len, spec[p.Tensor].Size)
		}
	}
	return 0
}

// hostname is os.Hostname; tests replace it.
var hostname = os.Hostname

// indexFromHostname is --index-from-hostname: the ordinal at the end of
// the host name (a StatefulSet pod's host name is its name, NAME-ORDINAL).
// --index set too (by flag, environment or config file) is an error: the
// two would disagree.
func indexFromHostname(fs *flag.FlagSet, hostname func() (string, error)) (int, error) {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "index" })
	if set {
		return 0, errors.New("--index and --index-from-hostname: give one")
	}
	host, err := hostname()
	if err != nil {
		return 0, fmt.Errorf("--index-from-hostname: %w", err)
	}
	return hostOrdinal(host)
}

// hostOrdinal is the decimal number after the last dash of a host name's
// first label: 3 for "tailor-ps-3" and "tailor-ps-3.tailor-ps.ns.svc".
func hostOrdinal(host string) (int, error) {
	label, _, _ := strings.Cut(host, ".")
	i := strings.LastIndexByte(label, '-')
	digits := label[i+1:]
	if i < 0 || digits == "" || len(digits) > 9 || strings.TrimLeft(digits, "0123456789") != "" ||
		len(digits) > 1 && digits[0] == '0' {
		return 0, fmt.Errorf("--index-from-hostname: host name %q does not end in -N (a StatefulSet pod's name)", host)
	}
	return strconv.Atoi(digits)
}
