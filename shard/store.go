package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Store holds named objects: the manifest and the shard files. Names are
// '/'-separated and relative to the store's root (see ValidName). A local
// directory is one Store (LocalStore), an S3 bucket prefix another (S3Store).
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

const tmpPrefix = ".tailor-tmp"

// LocalStore is a Store in a local directory. Objects are files; Put writes a
// temporary file in the target directory, syncs it and renames it into place.
type LocalStore struct {
	root string
}

var _ Store = (*LocalStore)(nil)

// NewLocalStore returns a store rooted at dir. The directory is created on the
// first Put if it does not exist yet; if it exists it must be a directory.
func NewLocalStore(dir string) (*LocalStore, error) {
	if dir == "" {
		return nil, errors.New("local store: empty directory path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local store %q: %w", dir, err)
	}
	if fi, err := os.Stat(abs); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("local store %q: not a directory", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local store %q: %w", dir, err)
	}
	return &LocalStore{root: abs}, nil
}

// Root returns the store's absolute directory.
func (s *LocalStore) Root() string { return s.root }

func (s *LocalStore) path(op, name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	return filepath.Join(s.root, filepath.FromSlash(name)), nil
}

// Put implements Store.
func (s *LocalStore) Put(ctx context.Context, name string, r io.Reader, size int64) (err error) {
	p, err := s.path("put", name)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %q: negative size %d", name, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"-*")
	if err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// Copy one byte more than size so a longer reader is caught.
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, r}, size+1))
	if err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("put %q: reader gave %d bytes, want %d", name, n, size)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	// Make the rename durable; a failure here does not undo the Put.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Get implements Store.
func (s *LocalStore) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	p, err := s.path("get", name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get %q: %w", name, ErrNotExist)
	} else if err != nil {
		return nil, fmt.Errorf("get %q: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("get %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("get %q: not a regular file: %w", name, ErrNotExist)
	}
	return f, nil
}

// getFrom is Get from byte off on, for WithRetry.
func (s *LocalStore) getFrom(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	rc, err := s.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if _, err := rc.(*os.File).Seek(off, io.SeekStart); err != nil {
		rc.Close()
		return nil, fmt.Errorf("get %q: %w", name, err)
	}
	return rc, nil
}

// Stat implements Store.
func (s *LocalStore) Stat(ctx context.Context, name string) (int64, error) {
	p, err := s.path("stat", name)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("stat %q: %w", name, ErrNotExist)
	} else if err != nil {
		return 0, fmt.Errorf("stat %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("stat %q: not a regular file: %w", name, ErrNotExist)
	}
	return fi.Size(), nil
}

// List implements Store. Temporary files of unfinished Puts are not listed.
func (s *LocalStore) List(ctx context.Context, prefix string) ([]string, error) {
	// Walk only the deepest directory the prefix pins down.
	start := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
		if ValidName(start) != nil {
			return nil, nil // no valid name has this prefix
		}
	}
	var names []string
	err := filepath.WalkDir(filepath.Join(s.root, filepath.FromSlash(start)), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		if name := filepath.ToSlash(rel); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	slices.Sort(names)
	return names, nil
}

// Delete implements Store.
func (s *LocalStore) Delete(ctx context.Context, name string) error {
	p, err := s.path("delete", name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	return nil
}

// OpenStore opens the store a URL names: a local path, file:///abs/path, or
// s3://bucket/prefix?settings (see S3.md; OpenStoreWith adds settings from
// flags). Other schemes give an error.
func OpenStore(ctx context.Context, rawURL string) (Store, error) {
	if rawURL == "" {
		return nil, errors.New("open store: empty location")
	}
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok || strings.ContainsAny(scheme, `/\.`) {
		return NewLocalStore(rawURL) // a plain path, even one containing "://" later on
	}
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
		return NewLocalStore(filepath.FromSlash(u.Path))
	case "s3":
		return OpenStoreWith(ctx, rawURL, OpenOptions{})
	default:
		return nil, fmt.Errorf("open store %q: unsupported scheme %q (want a path, file:///path or s3://bucket/prefix)", rawURL, scheme)
	}
}
