package worker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/optim"
	"github.com/tailorml/tailor/shard"
)

// BenchmarkStep is one worker's sync step against two parameter servers on
// loopback (batch 32, 15 labels): compute, push, the servers' Adam update,
// pull. "after" pushes once the gradient is complete; "overlap" sends each
// tensor while backprop goes on. ns/op is the whole step; push-ms is the
// push time left after the compute, push-span-ms the push's whole time.
//
//	go test -tags openblas -run XXX -bench Step -benchtime 20x ./worker
func BenchmarkStep(b *testing.B) {
	for _, size := range []int{32, 64, 96} {
		for _, overlap := range []bool{false, true} {
			name := fmt.Sprintf("size%d/%s", size, map[bool]string{false: "after", true: "overlap"}[overlap])
			b.Run(name, func(b *testing.B) { benchStep(b, size, overlap) })
		}
	}
}

func benchStep(b *testing.B, size int, overlap bool) {
	const batch, labels, seed = 32, 15, 1
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := model.DefaultConfig(size, labels)
	initNet, err := model.New(cfg, seed)
	if err != nil {
		b.Fatal(err)
	}
	spec, initTensors := netspec.Tensors(initNet)
	client := startServers(b, ctx, "bench", spec, optim.DefaultAdam(0), initTensors)
	mean, std := []float32{0.5, 0.5, 0.5}, []float32{0.25, 0.25, 0.25}
	w := NewCompute(ComputeConfig{Seed: seed, Augment: input.DefaultAugment(), Mean: mean, Std: std, Sync: true, Overlap: overlap}, initNet, client)
	if err := w.Pull(ctx, 0); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]*shard.Record, batch)
	for i := range recs {
		px := make([]byte, size*size*3)
		for j := range px {
			px[j] = byte(rng.IntN(256))
		}
		recs[i] = &shard.Record{ID: uint64(i), Labels: []uint16{uint16(rng.IntN(labels))}, Pixels: px}
	}
	step := int64(0)
	for ; step < 2; step++ { // warm up: buffers, connections
		if _, err := w.Step(ctx, step, 0, 0, recs); err != nil {
			b.Fatal(err)
		}
	}
	w.PushTime, w.PushSpan = 0, 0
	b.ResetTimer()
	for range b.N {
		if _, err := w.Step(ctx, step, 0, 0, recs); err != nil {
			b.Fatal(err)
		}
		step++
	}
	b.ReportMetric(w.PushTime.Seconds()*1e3/float64(b.N), "push-ms")
	b.ReportMetric(w.PushSpan.Seconds()*1e3/float64(b.N), "push-span-ms")
	b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "img/s")
}
