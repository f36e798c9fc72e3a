package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

const tmpPrefix = ".tailor-tmp"

// Local is a Store in a local directory. Objects are files; Put writes a
// temporary file in the target directory, syncs it and renames it into place.
type Local struct {
	root string
}

var _ Store = (*Local)(nil)

// NewLocal returns a store rooted at dir. The directory is created on the
// first Put if it does not exist yet; if it exists it must be a directory.
func NewLocal(dir string) (*Local, error) {
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
	return &Local{root: abs}, nil
}

// Root returns the store's absolute directory.
func (s *Local) Root() string { return s.root }

func (s *Local) path(op, name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	return filepath.Join(s.root, filepath.FromSlash(name)), nil
}

// Put implements Store.
func (s *Local) Put(ctx context.Context, name string, r io.Reader, size int64) (err error) {
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
func (s *Local) Get(ctx context.Context, name string) (io.ReadCloser, error) {
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
func (s *Local) getFrom(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
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
func (s *Local) Stat(ctx context.Context, name string) (int64, error) {
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
func (s *Local) List(ctx context.Context, prefix string) ([]string, error) {
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
func (s *Local) Delete(ctx context.Context, name string) error {
	p, err := s.path("delete", name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	return nil
}
