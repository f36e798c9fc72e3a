package serve

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec   // by handler and code
	latency   *prometheus.HistogramVec // by handler
	batchSize prometheus.Histogram
	batchTime prometheus.Histogram
	queue     prometheus.Gauge
	images    prometheus.Counter
	version   *prometheus.GaugeVec // 1 for the served version
	loads     *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailor_serve_requests_total", Help: "Requests answered, by handler and HTTP status code."}, []string{"handler", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tailor_serve_request_seconds", Help: "Time from a request's arrival to its answer.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"handler"})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tailor_serve_batch_size", Help: "Images per batch run on the net.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}})
	m.batchTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tailor_serve_batch_seconds", Help: "Time the net took for a batch.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	m.queue = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailor_serve_queue_depth", Help: "Inference requests admitted and not yet answered (being decoded, waiting or running)."})
	m.images = prometheus.NewCounter(prometheus.CounterOpts{Name: "tailor_serve_images_total", Help: "Images run through the net."})
	m.version = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tailor_serve_model_info", Help: "1 for the model version served."}, []string{"version"})
	m.loads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailor_serve_model_loads_total", Help: "Model loads, by result (ok, error)."}, []string{"result"})
	m.reg.MustRegister(m.requests, m.latency, m.batchSize, m.batchTime, m.queue, m.images, m.version, m.loads)
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

func (m *metrics) batch(images int, d time.Duration) {
	m.batchSize.Observe(float64(images))
	m.batchTime.Observe(d.Seconds())
	m.images.Add(float64(images))
}

// instrument counts a handler's answers by code and times them.
func (m *metrics) instrument(name string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r)
		m.requests.WithLabelValues(name, strconv.Itoa(sw.code)).Inc()
		m.latency.WithLabelValues(name).Observe(time.Since(t0).Seconds())
	}
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}
