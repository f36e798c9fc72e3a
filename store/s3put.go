package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tailorml/tailor/internal/retry"
)

// Put implements Store. It fails, leaving any old object, if r yields more
// or fewer than size bytes. A Put whose request failed on the network
// before any byte of r was read is retried; once r has been read from, it
// cannot be (r is not rewound).
func (s *S3) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	key, err := s.key("put", name)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %q: negative size %d", name, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if size == 0 {
		// No body is read for an empty object: check r ends now.
		var one [1]byte
		n, err := io.ReadFull(r, one[:])
		if n > 0 {
			return fmt.Errorf("put %q: reader gave more than 0 bytes", name)
		}
		if err != io.EOF {
			return fmt.Errorf("put %q: %w", name, err)
		}
		r = bytes.NewReader(nil)
	}
	contentType := "application/octet-stream"
	if strings.HasSuffix(name, ".json") {
		contentType = "application/json"
	}
	er := &exactReader{r: ctxReader{ctx, r}, left: size, size: size}
	// the waits minio-go makes between its own tries: 200 ms doubling,
	// capped at 1 s, each drawn at random below that (full jitter)
	waits := retry.Backoff{Base: 200 * time.Millisecond, Max: time.Second}
	for attempt := 1; ; attempt++ {
		_, err = s.client.PutObject(ctx, s.cfg.Bucket, key, er, size, minio.PutObjectOptions{
			ContentType: contentType,
			PartSize:    uint64(s.cfg.PartSize),
		})
		if er.err != nil {
			// r failed or had the wrong length; the upload was abandoned.
			return fmt.Errorf("put %q: %w", name, er.err)
		}
		if err == nil {
			return nil
		}
		if er.read > 0 || !isNetError(err) || attempt >= s.cfg.MaxAttempts ||
			!retry.Sleep(ctx, time.Duration(rand.Int64N(int64(waits.Next()))+1)) {
			return s.wrap(ctx, "put", name, err)
		}
	}
}

// exactReader passes on exactly size bytes of r and fails (and remembers
// the failure) if r ends early, has more, or fails. The check for more
// happens on the read that reaches size, so an uploader that reads exactly
// size bytes still sees the error before it completes the upload.
type exactReader struct {
	r          io.Reader
	size, left int64
	read       int64
	err        error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.read += int64(n)
	e.left -= int64(n)
	switch {
	case err != nil && err != io.EOF:
		e.err = err
		return n, err
	case e.left > 0 && err == io.EOF:
		e.err = fmt.Errorf("reader gave %d bytes, want %d", e.read, e.size)
		return n, e.err
	case e.left == 0 && err == nil:
		if err := e.checkEnd(); err != nil {
			e.err = err
			return n, err
		}
	}
	return n, nil
}

// checkEnd reads once more from r, which must be at its end.
func (e *exactReader) checkEnd() error {
	var one [1]byte
	for range 100 {
		n, err := e.r.Read(one[:])
		switch {
		case n > 0:
			return fmt.Errorf("reader gave more than %d bytes", e.size)
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
	return io.ErrNoProgress
}
