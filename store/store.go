package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"path/filepath"
	"strings"
)

// Store holds named objects: a data set's manifest and shard files, a
// run's checkpoints. Names are '/'-separated and relative to the store's
// root (see ValidName). A local directory is one Store (Local), an S3
// bucket prefix another (S3).
type Store interface {
	// Put stores size bytes read from r under name, replacing any old object.
	// Readers see either the old object or the whole new one, never a part.
	// It fails if r yields a different number of bytes than size.
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// Get opens the object. A missing object gives an error matching ErrNotExist.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Stat returns the object's size, or an error matching ErrNotExist.
	Stat(ctx context.Context, name string) (int64, error)
	// List returns the sorted names of all objects whose names start with
	// prefix (a plain string prefix, as in S3; "" lists everything).
	List(ctx context.Context, prefix string) ([]string, error)
	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
}

// ValidName reports whether name may name an object: non-empty, relative,
// '/'-separated with no empty, "." or ".." elements, no backslash or control
// characters, valid UTF-8, and no element starting with ".tailor-tmp" (the
// local store's temporary files).
func ValidName(name string) error {
	if !fs.ValidPath(name) || name == "." {
		return fmt.Errorf("invalid object name %q: want a relative '/'-separated path without empty, \".\" or \"..\" elements", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return fmt.Errorf("invalid object name %q: control character or backslash", name)
		}
	}
	for el := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(el, tmpPrefix) {
			return fmt.Errorf("invalid object name %q: %q is reserved for temporary files", name, tmpPrefix)
		}
	}
	return nil
}

// Open opens the store a URL names: a local path, file:///abs/path, or
// s3://bucket/prefix?settings (see S3.md; OpenWith adds settings from
// flags). Other schemes give an error.
func Open(ctx context.Context, rawURL string) (Store, error) {
	if rawURL == "" {
		return nil, errors.New("open store: empty location")
	}
	if !IsURL(rawURL) {
		return NewLocal(rawURL) // a plain path, even one containing "://" later on
	}
	scheme, _, _ := strings.Cut(rawURL, "://")
	switch strings.ToLower(scheme) {
	case "file":
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, fmt.Errorf("open store %q: %w", rawURL, err)
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("open store %q: file URL with host %q: want file:///absolute/path", rawURL, u.Host)
		}
		if u.Path == "" {
			return nil, fmt.Errorf("open store %q: file URL without a path", rawURL)
		}
		return NewLocal(filepath.FromSlash(u.Path))
	case "s3":
		return OpenWith(ctx, rawURL, OpenOptions{})
	default:
		return nil, fmt.Errorf("open store %q: unsupported scheme %q (want a path, file:///path or s3://bucket/prefix)", rawURL, scheme)
	}
}

// IsURL reports whether Open takes loc for a URL (scheme://...) rather
// than a path: it has "://" and no '/', '\' or '.' before it.
func IsURL(loc string) bool {
	scheme, _, ok := strings.Cut(loc, "://")
	return ok && !strings.ContainsAny(scheme, `/\.`)
}

// OpenOptions holds settings for OpenWith that a location does not carry.
type OpenOptions struct {
	// S3 holds s3:// settings by their URL query names (endpoint, region,
	// ...; see S3.md), used where the URL's query does not set them:
	// command line flags such as --s3-endpoint go here.
	S3 map[string]string
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// MaxAttempts, if positive, replaces S3Config.MaxAttempts (the S3
	// client's own tries of a request).
	MaxAttempts int
}

// OpenWith is Open with settings for s3:// locations.
func OpenWith(ctx context.Context, rawURL string, opts OpenOptions) (Store, error) {
	if !isS3URL(rawURL) {
		return Open(ctx, rawURL)
	}
	cfg, err := ParseS3URL(rawURL, opts)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if opts.MaxAttempts > 0 {
		cfg.MaxAttempts = opts.MaxAttempts
	}
	st, err := NewS3(ctx, cfg)
	if err != nil {
		return nil, err // says "open s3://..." already
	}
	return st, nil
}

func isS3URL(rawURL string) bool {
	scheme, _, ok := strings.Cut(rawURL, "://")
	return ok && strings.EqualFold(scheme, "s3")
}

// Location names a store in messages and logs, never with a secret: an S3
// store's s3://bucket/prefix, a local store's directory.
func Location(st Store) string {
	switch s := st.(type) {
	case *S3:
		return s.Location()
	case *Local:
		return s.Root()
	case fmt.Stringer:
		return s.String()
	}
	return fmt.Sprintf("%T", st)
}
