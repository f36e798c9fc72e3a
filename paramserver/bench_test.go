package paramserver

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/wire"
)

// netSpec is SmallerVGGNet's tensor list (as model.New builds it), with the
// BatchNorm running statistics as State tensors: at 96 px and 11 labels,
// 8.68 M floats (34.7 MB).
func netSpec(size, labels int) wire.Spec {
	var s wire.Spec
	add := func(name string, n int, k wire.Kind) { s = append(s, wire.Tensor{Name: name, Size: n, Kind: k}) }
	in := 3
	for i, o := range []int{32, 64, 64, 128, 128} {
		add(fmt.Sprintf("conv%d/w", i+1), o*in*9, wire.Param)
		add(fmt.Sprintf("conv%d/b", i+1), o, wire.Param)
		add(fmt.Sprintf("bn%d/gamma", i+1), o, wire.Param)
		add(fmt.Sprintf("bn%d/beta", i+1), o, wire.Param)
		in = o
	}
	side := size / 3 / 2 / 2
	add("dense1/w", 128*side*side*1024, wire.Param)
	add("dense1/b", 1024, wire.Param)
	add("bn6/gamma", 1024, wire.Param)
	add("bn6/beta", 1024, wire.Param)
	add("out/w", 1024*labels, wire.Param)
	add("out/b", labels, wire.Param)
	for i, c := range []int{32, 64, 64, 128, 128, 1024} {
		add(fmt.Sprintf("bn%d/mean", i+1), c, wire.State)
		add(fmt.Sprintf("bn%d/var", i+1), c, wire.State)
	}
	return s
}

// BenchmarkPushPull is one worker and one server on loopback, in sync mode:
// each iteration pushes the whole model's gradient and pulls the new
// weights. MB/s counts both directions (2 × 34.7 MB per iteration).
// "wire" skips the optimizer, to measure the protocol alone ("nocrc"
// also without payload checksums); "adam" includes the server's update.
// "fp16" and "topk" compress the pushes (MB/s still counts float32 bytes:
// the model moved per second); push-B/op is the worker's pushed payload
// (Client.PushedBytes, what tailor_worker_push_bytes_total counts).
func BenchmarkPushPull(b *testing.B) {
	spec := netSpec(96, 11)
	fp16 := wire.Compression{Encoding: wire.EncodingFloat16}
	topk := wire.Compression{Encoding: wire.EncodingTopK, TopK: 0.1}
	for _, bc := range []struct {
		name       string
		skipUpdate bool
		chunk      int
		noChecksum bool
		comp       wire.Compression
	}{
		{"wire/chunk=1MiB", true, 1 << 20, false, wire.Compression{}},
		{"wire/chunk=4MiB", true, 4 << 20, false, wire.Compression{}},
		{"wire/chunk=1MiB/nocrc", true, 1 << 20, true, wire.Compression{}},
		{"wire/chunk=1MiB/fp16", true, 1 << 20, false, fp16},
		{"wire/chunk=1MiB/topk=0.1", true, 1 << 20, false, topk},
		{"adam/chunk=1MiB", false, 1 << 20, false, wire.Compression{}},
		{"adam/chunk=1MiB/fp16", false, 1 << 20, false, fp16},
		{"adam/chunk=1MiB/topk=0.1", false, 1 << 20, false, topk},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := DefaultConfig(testRun, spec)
			cfg.ListenAddr = "127.0.0.1:0"
			cfg.Encoding = bc.comp.Encoding
			c := startCluster(b, NewStaticMembers("w0"), cfg)
			c.servers[0].skipUpdate = bc.skipUpdate
			cl, err := wire.NewClient(wire.ClientConfig{RunID: testRun, WorkerID: "w0", Addrs: c.addrs, Spec: spec, ChunkBytes: bc.chunk, NoChecksum: bc.noChecksum,
				Compression: bc.comp})
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			ctx := context.Background()
			w := tensors(spec, 1)
			if err := cl.Init(ctx, w); err != nil {
				b.Fatal(err)
			}
			g := tensors(spec, 2)
			into := zeros(spec)
			b.SetBytes(int64(2 * 4 * spec.Total()))
			cpu0 := cpuTime()
			b.ResetTimer()
			for step := int64(0); step < int64(b.N); step++ {
				if _, err := cl.Push(ctx, step, step, g); err != nil {
					b.Fatal(err)
				}
				if _, err := cl.Pull(ctx, step+1, into); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// CPU time (client and server, user and system) per
			// iteration: unlike MB/s, it barely moves with background load.
			cpu := (cpuTime() - cpu0).Seconds()
			b.ReportMetric(float64(cl.PushedBytes())/float64(b.N), "push-B/op")
			b.ReportMetric(cpu*1e3/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(2*4*spec.Total())/1e6/(cpu/float64(b.N)), "MB/cpu-s")
		})
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
