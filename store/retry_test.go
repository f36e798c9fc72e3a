package store

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

func TestTransient(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection refused", fmt.Errorf("get x: %w", refused), true},
		{"s3 unreachable", fmt.Errorf("get x: cannot reach s3 endpoint: %w: %w", refused, ErrUnreachable), true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"timeout", &net.DNSError{Err: "i/o timeout", IsTimeout: true}, true},
		{"slow down", fmt.Errorf("put x: %w", minio.ErrorResponse{Code: "SlowDown", StatusCode: 503}), true},
		{"internal error", minio.ErrorResponse{Code: "InternalError", StatusCode: 500}, true},
		{"bad gateway", minio.ErrorResponse{StatusCode: 502}, true},
		{"too many requests", minio.ErrorResponse{StatusCode: 429}, true},
		{"attempt cut by the budget", context.DeadlineExceeded, true},
		{"access denied", fmt.Errorf("get x: %w", ErrAccessDenied), false},
		{"access denied code", minio.ErrorResponse{Code: "AccessDenied", StatusCode: 403}, false},
		{"no such bucket", fmt.Errorf("get x: %w", ErrNoBucket), false},
		{"no such key", fmt.Errorf("get x: %w", ErrNotExist), false},
		{"no such key code", minio.ErrorResponse{Code: "NoSuchKey", StatusCode: 404}, false},
		{"damaged object", fmt.Errorf("get x: %w", ErrCorrupt), false},
		{"unknown CA", fmt.Errorf("tls: %w: %w", x509.UnknownAuthorityError{}, ErrUnreachable), false},
		{"canceled", fmt.Errorf("get: %w", context.Canceled), false},
		{"spent stream", permanent{refused}, false},
		{"already gave up", &UnreachableError{Err: refused}, false},
		{"other", errors.New("something else"), false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// fastPolicy retries for budget with millisecond waits.
func fastPolicy(budget time.Duration, log *slog.Logger) RetryPolicy {
	return RetryPolicy{Budget: budget, Initial: time.Millisecond, Max: 20 * time.Millisecond, Log: log}
}

// warnLog counts the WARN lines of a logger.
type warnLog struct {
	mu    sync.Mutex
	lines []string
}

func (w *warnLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, string(p))
	return len(p), nil
}

func (w *warnLog) logger() *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func (w *warnLog) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.lines)
}

func TestRetry(t *testing.T) {
	refused := fmt.Errorf("get x: %w", syscall.ECONNREFUSED)
	denied := fmt.Errorf("get x: %w", ErrAccessDenied)
	for _, c := range []struct {
		name       string
		errs       []error // the tries' errors in order; then success
		forever    bool    // the last error repeats
		wantCalls  int
		wantErr    error
		wantGaveUp bool
	}{
		{"first try", nil, false, 1, nil, false},
		{"transient then success", []error{refused, refused, refused}, false, 4, nil, false},
		{"5xx then success", []error{minio.ErrorResponse{Code: "SlowDown", StatusCode: 503}}, false, 2, nil, false},
		{"permanent at once", []error{denied}, false, 1, ErrAccessDenied, false},
		{"transient then permanent", []error{refused, denied}, false, 2, ErrAccessDenied, false},
		{"down for good", []error{refused}, true, -1, syscall.ECONNREFUSED, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var log warnLog
			calls := 0
			budget := 300 * time.Millisecond
			start := time.Now()
			err := Retry(context.Background(), fastPolicy(budget, log.logger()), "s3://b/p", "get x", func(ctx context.Context) error {
				calls++
				switch {
				case calls <= len(c.errs):
					return c.errs[calls-1]
				case c.forever:
					return c.errs[len(c.errs)-1]
				}
				return nil
			})
			elapsed := time.Since(start)
			if c.wantErr == nil && err != nil || c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
			if c.wantCalls >= 0 && calls != c.wantCalls {
				t.Errorf("%d tries, want %d", calls, c.wantCalls)
			}
			if got := errors.Is(err, ErrUnreachable); got != c.wantGaveUp {
				t.Errorf("gave up: %v, want %v (err %v)", got, c.wantGaveUp, err)
			}
			if c.wantGaveUp {
				var ue *UnreachableError
				if !errors.As(err, &ue) || ue.Attempts != calls || ue.Location != "s3://b/p" {
					t.Fatalf("err %#v, want an UnreachableError of s3://b/p after %d attempts", err, calls)
				}
				want := fmt.Sprintf("object store s3://b/p unreachable for %v (%d attempts): get x: connection refused", ue.For.Round(100*time.Millisecond), calls)
				if err.Error() != want {
					t.Errorf("message %q, want %q", err, want)
				}
				if elapsed < budget || elapsed > budget+200*time.Millisecond {
					t.Errorf("gave up after %v, want the budget %v", elapsed, budget)
				}
			}
			// one WARN line when the tries start failing (however many
			// follow), one INFO line with their count when one succeeds
			retried := calls > 1
			want := 0
			if retried {
				want = 1
				if err == nil {
					want = 2
				}
			}
			if log.count() != want {
				t.Errorf("%d log lines, want %d:\n%s", log.count(), want, strings.Join(log.lines, ""))
			}
			if retried && (!strings.Contains(log.lines[0], "level=WARN") || !strings.Contains(log.lines[0], "object store failed; retrying") ||
				!strings.Contains(log.lines[0], "attempt=1")) {
				t.Errorf("first line %q: want level=WARN, object store failed; retrying, attempt=1", log.lines[0])
			}
			if retried && err == nil {
				if l := log.lines[1]; !strings.Contains(l, "level=INFO") || !strings.Contains(l, "object store recovered") ||
					!strings.Contains(l, fmt.Sprintf("failures=%d", calls-1)) {
					t.Errorf("last line %q: want level=INFO, object store recovered, failures=%d", l, calls-1)
				}
			}
		})
	}
}

// A try that hangs is cut when the budget ends; a cancelled context ends
// the retries at once.
func TestRetryBounds(t *testing.T) {
	budget := 200 * time.Millisecond
	start := time.Now()
	err := Retry(context.Background(), fastPolicy(budget, nil), "s3://b", "get x", func(ctx context.Context) error {
		<-ctx.Done() // a server that accepts and never answers
		return fmt.Errorf("get x: %w", ctx.Err())
	})
	if elapsed := time.Since(start); !errors.Is(err, ErrUnreachable) || elapsed > budget+100*time.Millisecond {
		t.Errorf("hanging try: %v after %v, want ErrUnreachable after %v", err, elapsed, budget)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	err = Retry(ctx, fastPolicy(time.Minute, nil), "s3://b", "get x", func(ctx context.Context) error {
		return fmt.Errorf("get x: %w", syscall.ECONNREFUSED)
	})
	if elapsed := time.Since(start); err == nil || errors.Is(err, ErrUnreachable) || elapsed > time.Second {
		t.Errorf("cancelled: %v after %v, want the last error within a second", err, elapsed)
	}

	// no budget: one try
	calls := 0
	err = Retry(context.Background(), RetryPolicy{}, "s3://b", "get x", func(ctx context.Context) error {
		calls++
		return syscall.ECONNREFUSED
	})
	if calls != 1 || !errors.Is(err, ErrUnreachable) {
		t.Errorf("budget 0: %d tries, %v; want 1 and ErrUnreachable", calls, err)
	}
}

// flakyStore fails the first calls of each operation with errs[op], and
// breaks Get bodies after breakAt bytes, breaks times.
type flakyStore struct {
	Store
	mu      sync.Mutex
	errs    map[string][]error
	breakAt int64
	breaks  int
	calls   map[string]int
}

func (f *flakyStore) fail(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if q := f.errs[op]; len(q) > 0 {
		f.errs[op] = q[1:]
		return q[0]
	}
	return nil
}

func (f *flakyStore) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := f.fail("put"); err != nil {
		io.CopyN(io.Discard, r, size/2) // fails half-way through the upload
		return err
	}
	return f.Store.Put(ctx, name, r, size)
}

func (f *flakyStore) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := f.fail("get"); err != nil {
		return nil, err
	}
	rc, err := f.Store.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.breaks > 0 {
		f.breaks--
		return &breakingReader{rc: rc, left: f.breakAt}, nil
	}
	return rc, nil
}

// getFrom makes flakyStore a rangeGetter (as S3 and Local are).
func (f *flakyStore) getFrom(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	if err := f.fail("range"); err != nil {
		return nil, err
	}
	rc, err := f.Store.(rangeGetter).getFrom(ctx, name, off)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.breaks > 0 {
		f.breaks--
		return &breakingReader{rc: rc, left: f.breakAt}, nil
	}
	return rc, nil
}

func (f *flakyStore) Stat(ctx context.Context, name string) (int64, error) {
	if err := f.fail("stat"); err != nil {
		return 0, err
	}
	return f.Store.Stat(ctx, name)
}

func (f *flakyStore) List(ctx context.Context, prefix string) ([]string, error) {
	if err := f.fail("list"); err != nil {
		return nil, err
	}
	return f.Store.List(ctx, prefix)
}

func (f *flakyStore) Delete(ctx context.Context, name string) error {
	if err := f.fail("delete"); err != nil {
		return err
	}
	return f.Store.Delete(ctx, name)
}

// breakingReader returns a reset connection after left bytes.
type breakingReader struct {
	rc   io.ReadCloser
	left int64
}

func (b *breakingReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *breakingReader) Close() error { return b.rc.Close() }

func TestWithRetry(t *testing.T) {
	ctx := context.Background()
	refused := fmt.Errorf("cannot reach s3 endpoint: %w: %w", syscall.ECONNREFUSED, ErrUnreachable)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	local, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &flakyStore{Store: local, calls: map[string]int{}, errs: map[string][]error{
		"put": {refused, refused}, "stat": {refused}, "list": {refused, refused}, "delete": {refused}, "get": {refused},
	}}
	var log warnLog
	st := WithRetry(f, fastPolicy(5*time.Second, log.logger()))

	// a seekable Put is rewound for each try
	if err := st.Put(ctx, "a/obj", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("put: %v", err)
	}
	if size, err := st.Stat(ctx, "a/obj"); err != nil || size != int64(len(data)) {
		t.Fatalf("stat: %d, %v", size, err)
	}
	if names, err := st.List(ctx, "a/"); err != nil || len(names) != 1 {
		t.Fatalf("list: %v, %v", names, err)
	}
	// a Get whose body breaks twice goes on where it stopped
	f.breakAt, f.breaks = 10000, 2
	rc, err := st.Get(ctx, "a/obj")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get: %d bytes, %v; want %d bytes back", len(got), err, len(data))
	}
	// through a store without range requests: skips what was read
	f.breakAt, f.breaks = 7000, 1
	rc, err = WithRetry(struct{ Store }{f}, fastPolicy(5*time.Second, nil)).Get(ctx, "a/obj")
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get without ranges: %d bytes, %v", len(got), err)
	}
	if err := st.Delete(ctx, "a/obj"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	for op, want := range map[string]int{"put": 3, "stat": 2, "list": 3, "delete": 2, "get": 4, "range": 2} {
		if f.calls[op] != want {
			t.Errorf("%s: %d calls, want %d", op, f.calls[op], want)
		}
	}
	// each of the 5 operations that failed at first: a WARN line and an
	// INFO line when it succeeds (not a line per retry); each broken read
	if n := log.count(); n != 5*2+2 {
		t.Errorf("%d log lines, want 12 (a failure and a recovery for each of 5 operations, 2 broken reads):\n%s", n, strings.Join(log.lines, ""))
	}

	// a stream cannot be rewound: a Put that read from it is not retried
	f.errs["put"] = []error{refused}
	err = st.Put(ctx, "b", io.MultiReader(bytes.NewReader(data)), int64(len(data)))
	if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, ErrNotExist) {
		t.Errorf("put of a spent stream: %v, want the first error", err)
	}
	// permanent errors fail at once
	f.calls = map[string]int{}
	if _, err := st.Stat(ctx, "missing"); !errors.Is(err, ErrNotExist) || f.calls["stat"] != 1 {
		t.Errorf("stat of a missing object: %v after %d calls, want ErrNotExist at once", err, f.calls["stat"])
	}
}
