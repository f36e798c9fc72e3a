package worker

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg                        *prometheus.Registry
	steps, images              prometheus.Counter
	loss                       prometheus.Gauge
	stepSeconds                prometheus.Histogram
	compute, push, pull, stall prometheus.Gauge
	bnSync                     prometheus.Gauge
	pushBytes                  prometheus.Counter
	pushBytesSeen              uint64
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.steps = prometheus.NewCounter(prometheus.CounterOpts{Name: "tailor_worker_steps_total", Help: "Steps trained."})
	m.images = prometheus.NewCounter(prometheus.CounterOpts{Name: "tailor_worker_images_total", Help: "Images trained on."})
	m.loss = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_worker_loss", Help: "Loss of the last batch."})
	m.stepSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tailor_worker_step_seconds", Help: "Wall time of a step: compute, push, pull.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)})
	m.compute = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_worker_compute_seconds", Help: "Total time computing gradients."})
	m.push = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_worker_push_seconds", Help: "Total time pushing gradients."})
	m.pull = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_worker_pull_seconds", Help: "Total time pulling weights."})
	m.bnSync = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_worker_bn_sync_seconds",
		Help: "Total time of the synchronised-BatchNorm exchanges (part of the compute time), waiting for the step's slowest worker included."})
	m.stall = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_worker_input_stall_seconds", Help: "Total time waiting for shard reads."})
	m.pushBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "tailor_worker_push_bytes_total",
		Help: "Payload bytes of the gradients pushed, after compression (chunk headers not counted)."})
	m.reg.MustRegister(m.steps, m.images, m.loss, m.stepSeconds, m.compute, m.push, m.pull, m.stall, m.pushBytes, m.bnSync)
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

func (m *metrics) step(images int, loss float64, d time.Duration, c *Compute) {
	m.steps.Inc()
	m.images.Add(float64(images))
	m.loss.Set(loss)
	m.stepSeconds.Observe(d.Seconds())
	m.compute.Set(c.ComputeTime.Seconds())
	m.push.Set(c.PushTime.Seconds())
	m.pull.Set(c.PullTime.Seconds())
	m.bnSync.Set(c.BNSyncTime.Seconds())
	m.pushBytes.Add(float64(c.PushBytes - m.pushBytesSeen))
	m.pushBytesSeen = c.PushBytes
}
