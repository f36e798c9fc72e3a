package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/s3test"
	"github.com/tailorml/tailor/store"
)

// outage is a TCP proxy in front of the S3 server that can go down
// (listener closed, every connection cut: clients get "connection
// refused") and come back on the same address: the server as a client
// sees it stopped and restarted.
type outage struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	lis    net.Listener
	conns  map[net.Conn]bool
}

func newOutage(t *testing.T, target string) *outage {
	o := &outage{t: t, target: target, conns: map[net.Conn]bool{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.addr = lis.Addr().String()
	o.serve(lis)
	t.Cleanup(o.down)
	return o
}

func (o *outage) serve(lis net.Listener) {
	o.mu.Lock()
	o.lis = lis
	o.mu.Unlock()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", o.target)
			if err != nil {
				c.Close()
				continue
			}
			o.mu.Lock()
			o.conns[c], o.conns[u] = true, true
			o.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
}

// down stops listening and cuts every connection.
func (o *outage) down() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lis != nil {
		o.lis.Close()
		o.lis = nil
	}
	for c := range o.conns {
		c.Close()
	}
	clear(o.conns)
}

// up listens again on the same address.
func (o *outage) up() {
	lis, err := net.Listen("tcp", o.addr)
	if err != nil {
		o.t.Errorf("listen again on %s: %v", o.addr, err)
		return
	}
	o.serve(lis)
}

// The running roles' stores (OpenRetry) against a real S3 server that
// goes away: stopped and back within the budget, reads and writes succeed
// (a read whose connection is cut half-way goes on where it stopped);
// stopped for good, an operation fails after the budget with an error that
// says so.
func TestS3RetryOutage(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	bucket := srv.NewBucket(t)
	o := newOutage(t, srv.Endpoint)
	// the store goes through the proxy
	url := "s3://" + bucket + "/run?endpoint=" + o.addr + "&region=" + srv.Region + "&tls=false&path_style=true"
	var log warnLines
	policy := store.RetryPolicy{Budget: 10 * time.Second, Initial: 100 * time.Millisecond, Max: time.Second, Log: slog.New(slog.NewTextHandler(&log, nil))}
	ctx := context.Background()
	st, err := store.OpenRetry(ctx, url, policy)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 8<<20)
	rand.Read(data)
	if err := st.Put(ctx, "blob", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}

	t.Run("back within the budget", func(t *testing.T) {
		o.down()
		time.AfterFunc(2*time.Second, o.up)
		start := time.Now()
		rc, err := st.Get(ctx, "blob")
		if err != nil {
			t.Fatalf("get across a 2 s outage: %v", err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, %v; want the %d bytes written", len(got), err, len(data))
		}
		if d := time.Since(start); d < 2*time.Second {
			t.Errorf("read took %v: the outage was not seen", d)
		}
		if !log.has("object store failed; retrying", "attempt=1", "connection refused") {
			t.Errorf("no WARN line for the retries:\n%s", log.String())
		}
		t.Logf("get across a 2 s outage: %v", time.Since(start).Round(time.Millisecond))

		// a write too
		o.down()
		time.AfterFunc(time.Second, o.up)
		if err := st.Put(ctx, "blob2", bytes.NewReader(data[:1000]), 1000); err != nil {
			t.Fatalf("put across an outage: %v", err)
		}
	})

	t.Run("cut while reading", func(t *testing.T) {
		rc, err := st.Get(ctx, "blob")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		head := make([]byte, 64<<10)
		if _, err := io.ReadFull(rc, head); err != nil {
			t.Fatal(err)
		}
		o.down()
		time.AfterFunc(time.Second, o.up)
		rest, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(append(head, rest...), data) {
			t.Fatalf("read %d+%d bytes, %v; want the %d bytes written", len(head), len(rest), err, len(data))
		}
	})

	t.Run("down for good", func(t *testing.T) {
		o.down()
		budget := 3 * time.Second
		p := policy
		p.Budget = budget
		down := store.WithRetry(st, p)
		start := time.Now()
		_, err := down.Stat(ctx, "blob")
		elapsed := time.Since(start)
		var ue *store.UnreachableError
		if !errors.As(err, &ue) || !errors.Is(err, store.ErrUnreachable) {
			t.Fatalf("stat with the server gone: %v, want an UnreachableError", err)
		}
		want := "object store s3://" + bucket + "/run unreachable for "
		if msg := err.Error(); !strings.HasPrefix(msg, want) || !strings.Contains(msg, "connection refused") || ue.Attempts < 3 {
			t.Errorf("message %q (%d attempts): want it to start %q and name the refused connection", msg, ue.Attempts, want)
		}
		if elapsed < budget || elapsed > budget+time.Second {
			t.Errorf("gave up after %v, want the budget %v", elapsed, budget)
		}
		t.Logf("down for good: %v after %v", err, elapsed.Round(time.Millisecond))
		// a permanent error is not retried, even with the server up
		o.up()
		start = time.Now()
		if _, err := down.Stat(ctx, "missing"); !errors.Is(err, store.ErrNotExist) || time.Since(start) > time.Second {
			t.Errorf("stat of a missing object: %v after %v, want ErrNotExist at once", err, time.Since(start))
		}
	})
}

// warnLines collects log output.
type warnLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *warnLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *warnLines) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// has reports whether a WARN line holds every one of subs.
func (w *warnLines) has(subs ...string) bool {
	for _, line := range strings.Split(w.String(), "\n") {
		ok := strings.Contains(line, "level=WARN")
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			return true
		}
	}
	return false
}
