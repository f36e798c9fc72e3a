package serve

import (
	"context"
	_ "embed" // the page at /
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tailorml/tailor/internal/version"
)

//go:embed index.html
var indexHTML []byte

// Server answers inference requests for one model at a time.
type Server struct {
	cfg     Config
	log     *slog.Logger
	cur     atomic.Pointer[Model]
	b       *batcher
	m       *metrics
	mux     *http.ServeMux
	admit   atomic.Int64 // inference requests admitted and not yet answered
	closing atomic.Bool
}

// New makes a server; it serves once Serve is called, and answers 503 to
// inference until a model is set.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{cfg: cfg, log: log, m: newMetrics()}
	s.b = newBatcher(cfg.MaxBatch, cfg.MaxDelay, cfg.QueueDepth, s.m.batch)
	s.routes()
	return s, nil
}

// Model returns the model served now (nil before the first).
func (s *Server) Model() *Model { return s.cur.Load() }

// SetModel builds m's graphs for every batch size the server runs (on the
// caller's goroutine) and then serves it: requests from then on are
// prepared for it, and every batch runs on the model its requests were
// prepared for, so no request fails or mixes two models. m must be new
// (not set on a server before).
func (s *Server) SetModel(m *Model) error {
	if m.buckets != nil {
		return errors.New("serve: model already set on a server")
	}
	if err := m.prepare(s.cfg.MaxBatch); err != nil {
		s.m.loads.WithLabelValues("error").Inc()
		return err
	}
	old := s.cur.Swap(m)
	s.m.version.Reset()
	s.m.version.WithLabelValues(m.Version).Set(1)
	s.m.loads.WithLabelValues("ok").Inc()
	attrs := []any{"name", s.cfg.Name, "version", m.Version, "source", m.Source, "size", m.size, "labels", m.labels, "epoch", m.Bundle.Meta["epoch"]}
	if old != nil {
		attrs = append(attrs, "previous", old.Version)
	}
	s.log.Info("serving model", attrs...)
	return nil
}

// Handler is the server's HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves HTTP (HTTPS with Config.TLS) on ln and runs the batches until
// ctx ends; it then stops taking connections, finishes the requests in
// flight (at most ShutdownTimeout), stops the batch goroutine and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	bctx, stopBatches := context.WithCancel(context.WithoutCancel(ctx))
	s.b.start(bctx)
	defer func() {
		stopBatches()
		s.b.wait()
	}()
	// a request's body must arrive within its time limit (at least the
	// headers' 10 s): a slow sender does not hold a place in the queue
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: max(s.cfg.RequestTimeout, 10*time.Second), IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	if s.cfg.TLS != nil {
		srv.TLSConfig = s.cfg.TLS.Clone() // the server adds its protocols to it
	}
	errc := make(chan error, 1)
	go func() {
		var err error
		if s.cfg.TLS != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		errc <- err
	}()
	s.log.Info("serving", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil, "max_batch", s.cfg.MaxBatch, "max_delay", s.cfg.MaxDelay, "queue", s.cfg.QueueDepth)
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.closing.Store(true)
	s.log.Info("shutting down: finishing requests in flight", "in_flight", s.admit.Load())
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

func (s *Server) routes() {
	mux := http.NewServeMux()
	h := func(pattern, name string, f http.HandlerFunc) { mux.HandleFunc(pattern, s.m.instrument(name, f)) }
	h("GET /v2/health/live", "live", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"live": true})
	})
	h("GET /v2/health/ready", "ready", func(w http.ResponseWriter, r *http.Request) {
		ready := s.cur.Load() != nil && !s.closing.Load()
		writeJSON(w, map[bool]int{true: http.StatusOK, false: http.StatusServiceUnavailable}[ready], map[string]bool{"ready": ready})
	})
	h("GET /v2", "server_metadata", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"name": "tailor", "version": version.Get().Version, "extensions": []string{}})
	})
	for _, p := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		h("GET "+p, "model_metadata", s.modelMetadata)
		h("GET "+p+"/ready", "model_ready", s.modelReady)
		h("POST "+p+"/infer", "infer", s.infer)
	}
	h("POST /v1/predict", "predict", s.predict)
	h("GET /{$}", "index", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(indexHTML)
	})
	mux.Handle("GET /metrics", s.m.handler())
	h("/", "other", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	s.mux = mux
}

// model finds the model a v2 URL names: 404 for another name or version,
// 503 before the first model.
func (s *Server) model(r *http.Request) (*Model, error) {
	name := r.PathValue("name")
	if name != s.cfg.Name {
		return nil, errorf(http.StatusNotFound, "unknown model %q (this server serves %q)", name, s.cfg.Name)
	}
	m := s.cur.Load()
	if m == nil {
		return nil, errorf(http.StatusServiceUnavailable, "model %q: %v", name, ErrNoModel)
	}
	if v := r.PathValue("version"); v != "" && v != m.Version {
		return nil, errorf(http.StatusNotFound, "model %q has no version %q (serving %s)", name, v, m.Version)
	}
	return m, nil
}

type tensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	m, err := s.model(r)
	if err != nil {
		writeError(w, err)
		return
	}
	sz, c := int64(m.size), int64(m.channels)
	writeJSON(w, http.StatusOK, map[string]any{
		"name": s.cfg.Name, "versions": []string{m.Version}, "platform": "tailor_smallervggnet",
		"inputs": []tensorMetadata{{Name: inputTensor, Datatype: "FP32", Shape: []int64{-1, c, sz, sz}},
			{Name: imagesTensor, Datatype: "BYTES", Shape: []int64{-1}}},
		"outputs":    []tensorMetadata{{Name: outputTensor, Datatype: "FP32", Shape: []int64{-1, int64(m.labels)}}},
		"parameters": m.parameters(),
	})
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	_, err := s.model(r)
	if err != nil && statusOf(err) == http.StatusNotFound {
		writeError(w, err)
		return
	}
	ready := err == nil && !s.closing.Load()
	writeJSON(w, map[bool]int{true: http.StatusOK, false: http.StatusServiceUnavailable}[ready], map[string]any{"name": s.cfg.Name, "ready": ready})
}

// admission takes a place in the queue for one inference request, or
// answers 429. The caller calls release when answered.
func (s *Server) admission(w http.ResponseWriter) (release func(), ok bool) {
	if n := s.admit.Add(1); n > int64(s.cfg.QueueDepth) {
		s.admit.Add(-1)
		writeError(w, errorf(http.StatusTooManyRequests, "queue full (%d requests in flight): retry later", s.cfg.QueueDepth))
		return nil, false
	}
	s.m.queue.Inc()
	return func() {
		s.admit.Add(-1)
		s.m.queue.Dec()
	}, true
}

type responseOutput struct {
	Name     string    `json:"name"`
	Shape    []int     `json:"shape"`
	Datatype string    `json:"datatype"`
	Data     []float32 `json:"data"`
}

type inferResponse struct {
	ModelName    string           `json:"model_name"`
	ModelVersion string           `json:"model_version"`
	ID           string           `json:"id,omitempty"`
	Outputs      []responseOutput `json:"outputs"`
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	release, ok := s.admission(w)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	m, err := s.model(r)
	if err != nil {
		writeError(w, err)
		return
	}
	s.b.decoding.Add(1)
	req, x, n, err := s.readInfer(w, r, m)
	s.b.decoding.Add(-1)
	if err != nil {
		writeError(w, err)
		return
	}
	probs, err := s.b.submit(ctx, &job{model: m, x: x, n: n})
	if err != nil {
		writeError(w, s.runErr(ctx, err))
		return
	}
	writeJSON(w, http.StatusOK, inferResponse{ModelName: s.cfg.Name, ModelVersion: m.Version, ID: req.ID,
		Outputs: []responseOutput{{Name: outputTensor, Shape: []int{n, m.labels}, Datatype: "FP32", Data: probs}}})
}

func (s *Server) readInfer(w http.ResponseWriter, r *http.Request, m *Model) (*inferRequest, []float32, int, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		return nil, nil, 0, readErr(err)
	}
	return decodeInfer(body, m, s.limits())
}

func (s *Server) limits() limits {
	return limits{maxImages: s.cfg.MaxImages, maxPixels: s.cfg.MaxImagePixels}
}

// runErr says why a request got no result.
func (s *Server) runErr(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return errorf(http.StatusServiceUnavailable, "no answer within %s: the server is overloaded, retry later", s.cfg.RequestTimeout)
	case errors.Is(err, context.Canceled):
		return errorf(http.StatusServiceUnavailable, "request cancelled")
	case errors.Is(err, errStopped):
		return errorf(http.StatusServiceUnavailable, "%v", err)
	}
	s.log.Error("inference failed", "err", err)
	return fmt.Errorf("inference failed: %w", err)
}

// LabelScore is one label's probability and decision.
type LabelScore struct {
	Label       string  `json:"label"`
	Probability float32 `json:"probability"`
	Threshold   float32 `json:"threshold"`
	Present     bool    `json:"present"`
}

// ImagePrediction is one image's answer from /v1/predict: every label,
// highest probability first, and the labels above their thresholds.
type ImagePrediction struct {
	Image   string       `json:"image"`
	Labels  []LabelScore `json:"labels"`
	Present []string     `json:"present"`
}

// PredictResponse is /v1/predict's answer.
type PredictResponse struct {
	Model        string            `json:"model"`
	ModelVersion string            `json:"model_version"`
	Predictions  []ImagePrediction `json:"predictions"`
}

func (s *Server) predict(w http.ResponseWriter, r *http.Request) {
	release, ok := s.admission(w)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	m := s.cur.Load()
	if m == nil {
		writeError(w, errorf(http.StatusServiceUnavailable, "%v", ErrNoModel))
		return
	}
	s.b.decoding.Add(1)
	imgs, x, err := s.readPredict(w, r, m)
	s.b.decoding.Add(-1)
	if err != nil {
		writeError(w, err)
		return
	}
	probs, err := s.b.submit(ctx, &job{model: m, x: x, n: len(imgs)})
	if err != nil {
		writeError(w, s.runErr(ctx, err))
		return
	}
	resp := PredictResponse{Model: s.cfg.Name, ModelVersion: m.Version}
	for i, img := range imgs {
		resp.Predictions = append(resp.Predictions, m.labelsOf(img.name, probs[i*m.labels:(i+1)*m.labels]))
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) readPredict(w http.ResponseWriter, r *http.Request, m *Model) ([]namedImage, []float32, error) {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	lim := s.limits()
	imgs, err := readImages(r, lim)
	if err != nil {
		return nil, nil, err
	}
	il := m.inputLen()
	x := make([]float32, len(imgs)*il)
	for i, img := range imgs {
		if err := decodeImage(img.data, m, lim, x[i*il:(i+1)*il]); err != nil {
			return nil, nil, errorf(http.StatusBadRequest, "image %q: %v", img.name, err)
		}
	}
	return imgs, x, nil
}

func (m *Model) labelsOf(name string, probs []float32) ImagePrediction {
	p := ImagePrediction{Image: name, Present: []string{}}
	for i, l := range m.Bundle.Labels {
		ls := LabelScore{Label: l, Probability: probs[i], Threshold: m.Bundle.Thresholds[i], Present: probs[i] >= m.Bundle.Thresholds[i]}
		p.Labels = append(p.Labels, ls)
	}
	sort.SliceStable(p.Labels, func(i, j int) bool { return p.Labels[i].Probability > p.Labels[j].Probability })
	for _, l := range p.Labels {
		if l.Present {
			p.Present = append(p.Present, l.Label)
		}
	}
	return p
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// writeError answers {"error": "..."} with the error's status; 429 and 503
// say when to retry.
func writeError(w http.ResponseWriter, err error) {
	code := statusOf(err)
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	if code == http.StatusRequestEntityTooLarge {
		w.Header().Set("Connection", "close")
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
