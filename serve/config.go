// Package serve answers inference requests over HTTP for one model: the Open
// Inference Protocol (v2) REST API, a simpler /v1/predict for photos, a small
// page to try it, and Prometheus /metrics. Requests are gathered into
// batches (dynamic batching) that one goroutine runs on the net, which
// parallelises each batch over GOMAXPROCS as `tailor bench --mode infer`
// does; a bounded queue turns excess load away with 429 instead of growing.
// The model can be swapped while serving (a run's new best model): every
// batch runs on one model, and every answer names its version.
package serve

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// Config is a server's configuration. Start from DefaultConfig.
type Config struct {
	// Name is the model's name in the v2 URLs (/v2/models/{name}).
	Name string
	// MaxBatch is the largest batch the net runs; requests are gathered
	// until it is full or MaxDelay has passed.
	MaxBatch int
	// MaxDelay is how long a batch may wait for more requests while others
	// are still being read and decoded. A batch never waits when nothing
	// else is on its way, so a lone request is not delayed.
	MaxDelay time.Duration
	// QueueDepth bounds the requests admitted at once (being decoded,
	// waiting or running); one more is answered 429 with Retry-After.
	QueueDepth int
	// MaxImages bounds the images of one request.
	MaxImages int
	// MaxBodyBytes bounds a request body; a larger one is answered 413.
	MaxBodyBytes int64
	// MaxImagePixels bounds an encoded image's declared width×height,
	// checked before it is decoded (decompression bombs).
	MaxImagePixels int64
	// RequestTimeout bounds a request from its arrival to its answer.
	RequestTimeout time.Duration
	// ShutdownTimeout bounds the wait for requests in flight at shutdown.
	ShutdownTimeout time.Duration
	// Recheck is how often the model's source is looked at again besides
	// its watch (0: never).
	Recheck time.Duration
	// TLS, if set, serves HTTPS with it (mutual TLS when it asks for
	// client certificates, as the run's certificates do).
	TLS *tls.Config
}

// DefaultConfig is batches of up to 32 images waiting at most 2 ms for more,
// 64 requests admitted at once, 16 images and 32 MiB per request, images of
// up to 40 megapixels, 30 s per request.
func DefaultConfig() Config {
	return Config{Name: "tailor", MaxBatch: 32, MaxDelay: 2 * time.Millisecond, QueueDepth: 64, MaxImages: 16,
		MaxBodyBytes: 32 << 20, MaxImagePixels: 40_000_000, RequestTimeout: 30 * time.Second,
		ShutdownTimeout: 30 * time.Second, Recheck: 30 * time.Second}
}

// ErrConfig is returned by Validate; match with errors.Is.
var ErrConfig = errors.New("serve: bad config")

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name: want a model name"))
	}
	if c.MaxBatch < 1 || c.MaxBatch > 1024 {
		errs = append(errs, fmt.Errorf("max batch %d: want 1 to 1024", c.MaxBatch))
	}
	if c.MaxDelay < 0 {
		errs = append(errs, fmt.Errorf("max delay %s: want ≥ 0", c.MaxDelay))
	}
	if c.QueueDepth < 1 {
		errs = append(errs, fmt.Errorf("queue depth %d: want ≥ 1", c.QueueDepth))
	}
	if c.MaxImages < 1 {
		errs = append(errs, fmt.Errorf("max images %d: want ≥ 1", c.MaxImages))
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("max body %d bytes: want ≥ 1024", c.MaxBodyBytes))
	}
	if c.MaxImagePixels < 1 {
		errs = append(errs, fmt.Errorf("max image pixels %d: want ≥ 1", c.MaxImagePixels))
	}
	if c.RequestTimeout <= 0 || c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("request timeout %s, shutdown timeout %s: want > 0", c.RequestTimeout, c.ShutdownTimeout))
	}
	if c.Recheck < 0 {
		errs = append(errs, fmt.Errorf("recheck %s: want ≥ 0", c.Recheck))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}
