package model

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
)

// BenchmarkTrainStep measures one forward+backward pass at batch 32.
// `tailor bench` reports the same with img/s, GFLOP/s and peak RSS.
func BenchmarkTrainStep(b *testing.B) {
	for _, size := range []int{32, 64, 96} {
		b.Run(fmt.Sprintf("size%d", size), func(b *testing.B) {
			const batch = 32
			if th := os.Getenv("BLAS_THREADS"); th != "" {
				n, _ := strconv.Atoi(th)
				SetBLASThreads(n)
			}
			net, err := New(DefaultConfig(size, 15), 1)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 1))
			x := randData(rng, batch*net.Config().InputLen(), 1)
			y := make([]float32, batch*15)
			opt := StepOptions{Dropout: true, BN: BNTrain}
			if _, _, err := net.TrainStep(x, y, batch, opt); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			cpu0 := cpuSeconds()
			for i := 0; i < b.N; i++ {
				opt.Step = uint64(i)
				if _, _, err := net.TrainStep(x, y, batch, opt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "img/s")
			// CPU seconds per step: steadier than wall time on a shared machine.
			b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N)*1e3, "cpu-ms/op")
		})
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// BenchmarkPredict measures inference (running BatchNorm statistics, no
// dropout) at batch 32.
func BenchmarkPredict(b *testing.B) {
	for _, size := range []int{32, 64, 96} {
		b.Run(fmt.Sprintf("size%d", size), func(b *testing.B) {
			const batch = 32
			net, err := New(DefaultConfig(size, 15), 1)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 1))
			x := randData(rng, batch*net.Config().InputLen(), 1)
			out := make([]float32, batch*15)
			if err := net.Predict(x, batch, out); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			cpu0 := cpuSeconds()
			for i := 0; i < b.N; i++ {
				if err := net.Predict(x, batch, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "img/s")
			b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N)*1e3, "cpu-ms/op")
		})
	}
}
