package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tailorml/tailor/internal/retry"
)

// Defaults of RetryPolicy.
const (
	DefaultRetryBudget  = 90 * time.Second
	DefaultRetryInitial = 250 * time.Millisecond
	DefaultRetryMax     = 10 * time.Second
)

// RetryPolicy is how long and how often the running roles retry an
// object-store operation that failed transiently (see Transient): capped
// exponential backoff with full jitter, for at most Budget from the first
// try. The budget also bounds each try (a try still running when it ends
// is cancelled), so an operation gives up after about Budget, whatever the
// S3 client's own timeouts. Permanent errors are not retried.
type RetryPolicy struct {
	// Budget is the longest time an operation spends failing before it
	// gives up (0: no retries).
	Budget time.Duration
	// Initial is the first wait between tries; it doubles up to Max.
	Initial, Max time.Duration
	// Log gets a WARN line for every retry (nil: none).
	Log *slog.Logger
}

// DefaultRetryPolicy retries for DefaultRetryBudget, waiting 250 ms at
// first and at most 10 s between tries.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Budget: DefaultRetryBudget, Initial: DefaultRetryInitial, Max: DefaultRetryMax}
}

// UnreachableError is an operation that failed transiently for the whole
// retry budget. It matches ErrUnreachable and the last error.
type UnreachableError struct {
	Location string        // the store, e.g. s3://bucket/prefix
	For      time.Duration // from the first try to giving up
	Attempts int
	Err      error // the last try's error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("object store %s unreachable for %v (%d attempts): %v", e.Location, e.For.Round(100*time.Millisecond), e.Attempts, e.Err)
}

// Unwrap gives ErrUnreachable and the last error.
func (e *UnreachableError) Unwrap() []error { return []error{ErrUnreachable, e.Err} }

// Transient reports whether err is worth retrying: the endpoint could not
// be reached or the connection broke (refused, reset, timed out, DNS), or
// the service answered 5xx, 408, 429 or asked to slow down. Answers about
// the request itself are permanent: refused credentials, a missing bucket
// or object, damaged bytes (checksums), TLS certificates that do not
// verify, a context that ended.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var unreachable *UnreachableError
	var perm permanent
	if errors.As(err, &unreachable) || errors.As(err, &perm) || errors.Is(err, ErrNotExist) || errors.Is(err, ErrNoBucket) ||
		errors.Is(err, ErrAccessDenied) || errors.Is(err, ErrCorrupt) {
		return false
	}
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var rh tls.RecordHeaderError
	if errors.As(err, &ua) || errors.As(err, &cv) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &rh) {
		return false
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.Code != "" || resp.StatusCode != 0) {
		switch resp.Code {
		case "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled",
			"InternalError", "SlowDown", "SlowDownWrite", "SlowDownRead", "ServiceUnavailable", "XMinioServerNotInitialized":
			return true
		}
		return resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests
	}
	if errors.Is(err, ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var ne net.Error
	var dns *net.DNSError
	return errors.As(err, &ne) && ne.Timeout() || errors.As(err, &dns)
}

// Retry runs op until it succeeds, fails permanently, ctx ends or the
// budget is spent; then it returns an *UnreachableError naming location
// (the store, for the message) and the last error. what names the
// operation in the lines logged: a WARN line at the first failed try, an
// INFO line with the count of failed tries when one succeeds after them.
func Retry(ctx context.Context, p RetryPolicy, location, what string, op func(ctx context.Context) error) error {
	return p.retry(ctx, location, what, op, nil)
}

// retry is Retry; with keep set, a successful try's context lives on (for
// a body still to be read) and *keep gets its cancel function.
func (p RetryPolicy) retry(ctx context.Context, location, what string, op func(ctx context.Context) error, keep *context.CancelFunc) error {
	start := time.Now()
	deadline := start.Add(p.Budget)
	waits := p.backoff()
	var last error // the last error of a try the budget did not cut
	// one WARN line when the tries start failing, one INFO line with their
	// count when one succeeds again (a give-up is the error returned)
	fails := retry.Streak{Log: p.Log, What: "object store"}
	for attempt := 1; ; attempt++ {
		// the budget cancels a try still running when it ends; a timer
		// rather than a deadline, so that a kept context outlives it
		actx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(time.Until(deadline), cancel)
		err := op(actx)
		cut := !timer.Stop()
		if err == nil && keep != nil && !cut {
			*keep = cancel
			fails.OK("store", location, "op", what)
			return nil
		}
		cancel()
		if err == nil {
			fails.OK("store", location, "op", what)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if !cut && !Transient(err) {
			return err
		}
		if !cut || last == nil {
			last = err // a cut try's error says only that it was cut
		}
		left := time.Until(deadline)
		if cut || left <= 0 || p.Budget <= 0 {
			return &UnreachableError{Location: location, For: time.Since(start), Attempts: attempt, Err: last}
		}
		wait := min(fullJitter(waits.Next()), left)
		fails.Fail(err, "store", location, "op", what, "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "left", left.Round(time.Second))
		if !retry.Sleep(ctx, wait) {
			return err
		}
	}
}

// backoff is the schedule of waits between tries: Initial, doubling up to
// Max (fullJitter then draws each wait at random below it).
func (p RetryPolicy) backoff() *retry.Backoff {
	initial, ceil := p.Initial, p.Max
	if initial <= 0 {
		initial = DefaultRetryInitial
	}
	if ceil < initial {
		ceil = initial
	}
	return &retry.Backoff{Base: initial, Max: ceil}
}

// fullJitter is a wait drawn uniformly from [1 ms, d + 1 ms).
func fullJitter(d time.Duration) time.Duration {
	return time.Millisecond + time.Duration(rand.Int64N(int64(d)))
}

// WithRetry returns st with every operation retried under p. A Put is
// retried if r is an io.Seeker (rewound for each try) or if the failed try
// read nothing from it. A Get retries opening the object and, if the
// connection breaks while the body is read, opens it again where the read
// stopped (callers check the bytes: shards, checkpoint parts and manifests
// carry checksums).
func WithRetry(st Store, p RetryPolicy) Store {
	if r, ok := st.(*retryStore); ok {
		st = r.st
	}
	return &retryStore{st: st, p: p, loc: Location(st)}
}

type retryStore struct {
	st  Store
	p   RetryPolicy
	loc string
}

// Unwrap returns the store without retries.
func (s *retryStore) Unwrap() Store { return s.st }

// Location names the store, as errors do.
func (s *retryStore) Location() string { return s.loc }

func (s *retryStore) String() string { return s.loc }

func (s *retryStore) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	seeker, _ := r.(io.Seeker)
	cr := &countReader{r: r}
	return Retry(ctx, s.p, s.loc, "put "+name, func(ctx context.Context) error {
		if seeker != nil && cr.n > 0 {
			if _, err := seeker.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("put %q: rewind: %w", name, err)
			}
		} else if cr.n > 0 {
			return fmt.Errorf("put %q: cannot retry a stream already read from", name)
		}
		cr.n = 0
		err := s.st.Put(ctx, name, cr, size)
		if err != nil && seeker == nil && cr.n > 0 {
			return permanent{err} // the stream is spent
		}
		return err
	})
}

// permanent marks an error that must not be retried.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (s *retryStore) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rr := &retryReader{s: s, ctx: ctx, name: name}
	if err := rr.open(); err != nil {
		return nil, err
	}
	return rr, nil
}

func (s *retryStore) Stat(ctx context.Context, name string) (int64, error) {
	var size int64
	err := Retry(ctx, s.p, s.loc, "stat "+name, func(ctx context.Context) (err error) {
		size, err = s.st.Stat(ctx, name)
		return err
	})
	return size, err
}

func (s *retryStore) List(ctx context.Context, prefix string) ([]string, error) {
	var names []string
	err := Retry(ctx, s.p, s.loc, "list "+prefix, func(ctx context.Context) (err error) {
		names, err = s.st.List(ctx, prefix)
		return err
	})
	return names, err
}

func (s *retryStore) Delete(ctx context.Context, name string) error {
	return Retry(ctx, s.p, s.loc, "delete "+name, func(ctx context.Context) error { return s.st.Delete(ctx, name) })
}

// OpenRetry opens the store a URL names (Open) for a running
// role: opening and every operation are retried under p (WithRetry). The
// S3 client makes at most 2 requests per try (the second only for what it
// must redo at once, such as a region redirect), so p's budget and backoff
// govern the retries.
func OpenRetry(ctx context.Context, rawURL string, p RetryPolicy) (Store, error) {
	loc, _, _ := strings.Cut(rawURL, "?")
	var st Store
	err := Retry(ctx, p, loc, "open", func(ctx context.Context) (err error) {
		st, err = OpenWith(ctx, rawURL, OpenOptions{MaxAttempts: 2})
		return err
	})
	if err != nil {
		return nil, err
	}
	return WithRetry(st, p), nil
}

// rangeGetter opens an object from an offset (S3, Local).
type rangeGetter interface {
	getFrom(ctx context.Context, name string, off int64) (io.ReadCloser, error)
}

// retryReader is a Get body that opens the object again where it stopped
// when the connection breaks.
type retryReader struct {
	s      *retryStore
	ctx    context.Context
	name   string
	rc     io.ReadCloser
	cancel context.CancelFunc
	off    int64
	eof    bool
}

// open opens the object at rr.off, retrying.
func (rr *retryReader) open() error {
	var cancel context.CancelFunc
	var rc io.ReadCloser
	what := "get " + rr.name
	if rr.off > 0 {
		what = fmt.Sprintf("get %s from byte %d", rr.name, rr.off)
	}
	err := rr.s.p.retry(rr.ctx, rr.s.loc, what, func(ctx context.Context) (err error) {
		rc, err = getFrom(ctx, rr.s.st, rr.name, rr.off)
		return err
	}, &cancel)
	if err != nil {
		return err
	}
	rr.rc, rr.cancel = rc, cancel
	return nil
}

// getFrom opens name at off, by a range request where the store has one,
// else by skipping off bytes.
func getFrom(ctx context.Context, st Store, name string, off int64) (io.ReadCloser, error) {
	if off == 0 {
		return st.Get(ctx, name)
	}
	if rg, ok := st.(rangeGetter); ok {
		return rg.getFrom(ctx, name, off)
	}
	rc, err := st.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		rc.Close()
		if err == io.EOF {
			err = fmt.Errorf("get %q: the object is shorter than before (%d bytes read): %w", name, off, ErrCorrupt)
		}
		return nil, err
	}
	return rc, nil
}

func (rr *retryReader) Read(p []byte) (int, error) {
	for {
		if rr.eof {
			return 0, io.EOF
		}
		if rr.rc == nil {
			if err := rr.open(); err != nil {
				return 0, err
			}
		}
		n, err := rr.rc.Read(p)
		rr.off += int64(n)
		if err == nil || err == io.EOF {
			rr.eof = err == io.EOF
			return n, err
		}
		if rr.ctx.Err() != nil || !Transient(err) {
			return n, err
		}
		// the connection broke: the next read opens the object again
		if rr.s.p.Log != nil {
			rr.s.p.Log.Warn("object store read broke; reopening", "store", rr.s.loc, "object", rr.name, "at", rr.off, "err", err)
		}
		rr.closeBody()
		if n > 0 {
			return n, nil
		}
	}
}

func (rr *retryReader) closeBody() error {
	var err error
	if rr.rc != nil {
		err = rr.rc.Close()
		rr.rc = nil
	}
	if rr.cancel != nil {
		rr.cancel()
		rr.cancel = nil
	}
	return err
}

func (rr *retryReader) Close() error { return rr.closeBody() }
