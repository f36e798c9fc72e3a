package worker

import (
	"context"
	"github.com/tailorml/tailor/internal/job"
	"math"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/optim"
	"github.com/tailorml/tailor/paramserver"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/train"
)

// One worker in sync mode against two parameter servers does exactly what
// the single-process trainer does: after the same batches, the weights and
// BatchNorm statistics are equal bit for bit, whether it pushes after its
// step or while backprop runs, and with L2 or AdamW weight decay on the
// kernels (which the servers know from the tensor spec, the trainer from
// the net; dense1/w is split across the two servers), and with the loss's
// positive weights (--pos-weight auto, from the training counts).
func TestWorkerMatchesSingleProcess(t *testing.T) {
	l2, adamw := optim.DefaultAdam(3), optim.DefaultAdam(3)
	l2.L2, adamw.WeightDecay = 0.05, 2 // strong, so that 4 steps show it
	for _, tc := range []struct {
		name    string
		overlap bool
		adam    optim.AdamConfig
		posW    string
	}{
		{"push after step", false, optim.DefaultAdam(3), "none"},
		{"overlapped", true, optim.DefaultAdam(3), "none"},
		{"l2", true, l2, "none"},
		{"adamw", false, adamw, "none"},
		{"pos-weight auto", true, optim.DefaultAdam(3), "auto"},
	} {
		t.Run(tc.name, func(t *testing.T) { testWorkerMatches(t, tc.overlap, tc.adam, tc.posW) })
	}
}

func testWorkerMatches(t *testing.T, overlap bool, adam optim.AdamConfig, posWeight string) {
	st, m := testData(t)
	var pw input.PosWeight
	if err := pw.Set(posWeight); err != nil {
		t.Fatal(err)
	}
	posW, err := train.PosWeights(pw, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	recsAll, err := shard.ReadSplit(ctx, st, m, shard.SplitTrain)
	if err != nil {
		t.Fatal(err)
	}
	cfg := model.DefaultConfig(m.Width, len(m.Labels))
	const seed, batch, steps = 5, 8, 4
	mean, std := make([]float32, 3), make([]float32, 3)
	for i := range mean {
		mean[i], std[i] = float32(m.Mean[i]), float32(m.Std[i])
	}
	aug := input.DefaultAugment()

	// the parameter servers, initialised with the seed's weights
	initNet, _ := model.New(cfg, seed)
	spec, initTensors := netspec.Tensors(initNet)
	client := startServers(t, ctx, "run1", spec, adam, initTensors)
	wnet, _ := model.New(cfg, 999) // different weights: the pull must replace them
	w := NewCompute(ComputeConfig{Seed: seed, Augment: aug, Mean: mean, Std: std, Sync: true, Overlap: overlap, PosWeight: posW}, wnet, client)
	if err := w.Pull(ctx, 0); err != nil {
		t.Fatal(err)
	}

	// the single-process reference: tailor train's optimizer and step
	ref, _ := model.New(cfg, seed)
	opt, pdata, err := train.Optimizer(adam, ref)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := model.New(cfg, seed) // and without regularisation, to see that it did something
	popt, pplain, _ := train.Optimizer(optim.DefaultAdam(3), plain)
	x := make([]float32, batch*cfg.InputLen())
	y := make([]float32, batch*cfg.Labels)

	for step := int64(0); step < steps; step++ {
		var recs []*shard.Record
		for i := 0; i < batch; i++ {
			recs = append(recs, &recsAll[(int(step)*batch+i)%len(recsAll)])
		}
		wl, err := w.Step(ctx, step, 0, 0, recs)
		if err != nil {
			t.Fatal(err)
		}
		input.FillBatch(x, y, recs, cfg.Labels, cfg.Size, cfg.Size, 3, aug, mean, std, seed, 0)
		rl, grads, err := ref.TrainStep(x, y, batch, model.StepOptions{Dropout: true, Seed: model.DropoutSeed(seed, 0), Step: uint64(step), PosWeight: posW})
		if err != nil {
			t.Fatal(err)
		}
		if err := opt.Update(pdata, grads); err != nil {
			t.Fatal(err)
		}
		_, pgrads, err := plain.TrainStep(x, y, batch, model.StepOptions{Dropout: true, Seed: model.DropoutSeed(seed, 0), Step: uint64(step)})
		if err != nil {
			t.Fatal(err)
		}
		_ = popt.Update(pplain, pgrads)
		if wl != rl {
			t.Fatalf("step %d: worker loss %v, single-process %v", step, wl, rl)
		}
		if w.Version() != step+1 {
			t.Fatalf("step %d: worker holds version %d", step, w.Version())
		}
	}
	_, wt := netspec.Tensors(w.Net())
	_, rt := netspec.Tensors(ref)
	for i := range rt {
		for j := range rt[i] {
			if math.Float32bits(wt[i][j]) != math.Float32bits(rt[i][j]) {
				t.Fatalf("%s[%d]: worker %g, single-process %g", spec[i].Name, j, wt[i][j], rt[i][j])
			}
		}
	}
	// and the regularisation did something: the kernels differ from
	// training without it
	var changed bool
	for i, p := range plain.Params() {
		same := slices.Equal(p.Data, pdata[i])
		changed = changed || (p.Kernel && !same)
	}
	if want := adam.L2 != 0 || adam.WeightDecay != 0 || posW != nil; changed != want {
		t.Errorf("kernels differ from unregularised, unweighted training: %v, want %v", changed, want)
	}
}

// startServers starts two sync parameter servers for worker "w0" on
// loopback, initialised with init, and returns a client of them; they stop
// with the test.
func startServers(tb testing.TB, ctx context.Context, run string, spec wire.Spec, adam optim.AdamConfig, init [][]float32) *wire.Client {
	tb.Helper()
	var addrs []string
	for i := range 2 {
		pc := paramserver.DefaultConfig(run, spec)
		pc.Index, pc.Servers, pc.Adam, pc.Mode = i, 2, adam, job.ModeSync
		ps, err := paramserver.New(pc, paramserver.NewStaticMembers("w0"))
		if err != nil {
			tb.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		go ps.Serve(ctx, lis)
		tb.Cleanup(func() { ps.Close() })
		addrs = append(addrs, lis.Addr().String())
	}
	client, err := wire.NewClient(wire.ClientConfig{RunID: run, WorkerID: "w0", Addrs: addrs, Spec: spec})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close() })
	if err := client.Init(ctx, init); err != nil {
		tb.Fatal(err)
	}
	return client
}
