package paramserver

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tailorml/tailor/internal/wire"
)

// Causes that end a sync step, labelling tailor_ps_sync_steps_total and
// tailor_ps_missing_gradients_total.
const (
	endAll        = "all"        // every active worker's gradient arrived
	endMembership = "membership" // the rest of the expected workers left
	endDeadline   = "deadline"   // StepDeadline passed
	endQuorum     = "quorum"     // SyncQuorum gradients arrived
	endDecided    = "decided"    // the Decider decided the step
)

var reasonIndex = func() map[string]int {
	m := make(map[string]int, len(wire.Reasons))
	for i, r := range wire.Reasons {
		m[r] = i
	}
	return m
}()

// metrics are the server's counters. The atomics feed both Status and the
// Prometheus registry, so the two never disagree.
type metrics struct {
	reg *prometheus.Registry

	accepted     atomic.Uint64
	rejected     []atomic.Uint64 // by reasonIndex
	pullRejected []atomic.Uint64
	bytesIn      atomic.Uint64
	bytesOut     atomic.Uint64
	steps        atomic.Uint64
	missing      atomic.Uint64
	version      atomic.Int64
	members      atomic.Int64
	pending      atomic.Int64

	decisionErrors atomic.Uint64 // decisions that could not be applied
	decideFailures atomic.Uint64 // Decide calls that failed or timed out

	syncSteps     *prometheus.CounterVec
	missingByEnd  *prometheus.CounterVec
	stepSeconds   prometheus.Histogram
	updateSeconds prometheus.Histogram
	staleness     prometheus.Histogram
}

func newMetrics(cfg *Config) *metrics {
	m := &metrics{
		reg:          prometheus.NewRegistry(),
		rejected:     make([]atomic.Uint64, len(wire.Reasons)),
		pullRejected: make([]atomic.Uint64, len(wire.Reasons)),
	}
	labels := prometheus.Labels{"run": cfg.RunID, "server": strconv.Itoa(cfg.Index)}
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(v.Load()) })
	}
	gauge := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(v.Load()) })
	}
	m.syncSteps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailor_ps_sync_steps_total", Help: "Sync steps applied, by what ended them.", ConstLabels: labels,
	}, []string{"end"})
	m.missingByEnd = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tailor_ps_missing_gradients_total", Help: "Gradients a sync step went without, by what ended the step.", ConstLabels: labels,
	}, []string{"end"})
	for _, e := range []string{endAll, endMembership, endDeadline, endQuorum, endDecided} {
		m.syncSteps.WithLabelValues(e)
		m.missingByEnd.WithLabelValues(e)
	}
	m.stepSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tailor_ps_step_seconds", ConstLabels: labels,
		Help:    "Sync: time from a step's first gradient to its update. Async: time to apply one gradient.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
	})
	m.updateSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tailor_ps_update_seconds", ConstLabels: labels,
		Help:    "Time to average gradients and apply the optimizer.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	m.staleness = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tailor_ps_staleness", ConstLabels: labels,
		Help:    "Async/SSP: updates applied between a gradient's base version and its own update.",
		Buckets: []float64{0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64},
	})
	m.reg.MustRegister(
		counter("tailor_ps_pushes_accepted_total", "Pushes accepted.", &m.accepted),
		counter("tailor_ps_bytes_received_total", "Payload bytes received in pushes.", &m.bytesIn),
		counter("tailor_ps_bytes_sent_total", "Payload bytes sent in pulls.", &m.bytesOut),
		counter("tailor_ps_steps_total", "Updates applied.", &m.steps),
		counter("tailor_ps_decision_errors_total", "Sync: decisions this server could not apply (it lacked an included gradient); each stops sync.", &m.decisionErrors),
		counter("tailor_ps_decide_failures_total", "Sync: calls to the Decider that failed or timed out (retried).", &m.decideFailures),
		gauge("tailor_ps_version", "Current weights version.", &m.version),
		gauge("tailor_ps_members", "Active workers.", &m.members),
		gauge("tailor_ps_pending", "Sync: gradients held for the current step. SSP: pushes held back.", &m.pending),
		&reasonCollector{desc: prometheus.NewDesc("tailor_ps_pushes_rejected_total", "Pushes rejected, by reason.", []string{"reason"}, labels), counts: m.rejected},
		&reasonCollector{desc: prometheus.NewDesc("tailor_ps_pulls_rejected_total", "Pulls rejected, by reason.", []string{"reason"}, labels), counts: m.pullRejected},
		m.syncSteps, m.missingByEnd, m.stepSeconds, m.updateSeconds, m.staleness,
	)
	return m
}

// reasonCollector exports a counter per rejection reason.
type reasonCollector struct {
	desc   *prometheus.Desc
	counts []atomic.Uint64
}

func (c *reasonCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *reasonCollector) Collect(ch chan<- prometheus.Metric) {
	for i, r := range wire.Reasons {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.counts[i].Load()), r)
	}
}

func (m *metrics) reject(reason string) { m.rejected[reasonIndex[reason]].Add(1) }

func (m *metrics) rejectedCounts(counts []atomic.Uint64) []wire.ReasonCount {
	var out []wire.ReasonCount
	for i, r := range wire.Reasons {
		if n := counts[i].Load(); n > 0 {
			out = append(out, wire.ReasonCount{Reason: r, Count: n})
		}
	}
	return out
}

// MetricsHandler serves the server's Prometheus metrics (mount it at
// /metrics). Every server has its own registry, so several can share a
// process.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})
}

// Registry is the server's Prometheus registry, to gather its metrics into
// another handler.
func (s *Server) Registry() *prometheus.Registry { return s.m.reg }
