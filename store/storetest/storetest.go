// Package storetest provides test doubles for package store: an in-memory
// Store and a conformance suite every Store implementation should pass.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tailorml/tailor/store"
)

// MemStore is a Store in memory, safe for concurrent use.
type MemStore struct {
	mu   sync.Mutex
	objs map[string][]byte
}

var _ store.Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{objs: map[string][]byte{}} }

// Put implements store.Store.
func (s *MemStore) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := store.ValidName(name); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if size < 0 {
		return fmt.Errorf("put %q: negative size %d", name, size)
	}
	data, err := io.ReadAll(io.LimitReader(r, size+1))
	if err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if int64(len(data)) != size {
		return fmt.Errorf("put %q: reader gave %d bytes, want %d", name, len(data), size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[name] = data
	return nil
}

// Get implements store.Store.
func (s *MemStore) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := store.ValidName(name); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.objs[name]
	if !ok {
		return nil, fmt.Errorf("get %q: %w", name, store.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// Stat implements store.Store.
func (s *MemStore) Stat(ctx context.Context, name string) (int64, error) {
	if err := store.ValidName(name); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.objs[name]
	if !ok {
		return 0, fmt.Errorf("stat %q: %w", name, store.ErrNotExist)
	}
	return int64(len(data)), nil
}

// List implements store.Store.
func (s *MemStore) List(ctx context.Context, prefix string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n := range s.objs {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Delete implements store.Store.
func (s *MemStore) Delete(ctx context.Context, name string) error {
	if err := store.ValidName(name); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objs, name)
	return nil
}

// Bytes returns a copy of an object's bytes, for tests that corrupt them.
func (s *MemStore) Bytes(name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.objs[name]
	return bytes.Clone(data), ok
}

// SetBytes replaces an object's bytes without any check.
func (s *MemStore) SetBytes(name string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[name] = bytes.Clone(data)
}

// TestStore checks the Store contract against stores made by newStore, each
// of which must start empty.
func TestStore(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := context.Background()
	put := func(t *testing.T, st store.Store, name, data string) {
		t.Helper()
		if err := st.Put(ctx, name, strings.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("Put(%q): %v", name, err)
		}
	}
	get := func(t *testing.T, st store.Store, name string) string {
		t.Helper()
		rc, err := st.Get(ctx, name)
		if err != nil {
			t.Fatalf("Get(%q): %v", name, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("Get(%q): read: %v", name, err)
		}
		return string(b)
	}

	t.Run("PutGetStat", func(t *testing.T) {
		st := newStore(t)
		put(t, st, "a/b/c.shard", "hello")
		put(t, st, "empty", "")
		if got := get(t, st, "a/b/c.shard"); got != "hello" {
			t.Errorf("Get = %q, want %q", got, "hello")
		}
		if got := get(t, st, "empty"); got != "" {
			t.Errorf("Get(empty) = %q, want empty", got)
		}
		if n, err := st.Stat(ctx, "a/b/c.shard"); err != nil || n != 5 {
			t.Errorf("Stat = %d, %v; want 5, nil", n, err)
		}
		put(t, st, "a/b/c.shard", "replaced")
		if got := get(t, st, "a/b/c.shard"); got != "replaced" {
			t.Errorf("Get after replace = %q, want %q", got, "replaced")
		}
	})
	t.Run("Missing", func(t *testing.T) {
		st := newStore(t)
		put(t, st, "dir/x", "1")
		for _, name := range []string{"nope", "dir", "dir/y"} {
			if _, err := st.Get(ctx, name); !errors.Is(err, store.ErrNotExist) {
				t.Errorf("Get(%q) error = %v, want ErrNotExist", name, err)
			}
			if _, err := st.Stat(ctx, name); !errors.Is(err, store.ErrNotExist) {
				t.Errorf("Stat(%q) error = %v, want ErrNotExist", name, err)
			}
		}
		if err := st.Delete(ctx, "nope"); err != nil {
			t.Errorf("Delete(missing) = %v, want nil", err)
		}
	})
	t.Run("List", func(t *testing.T) {
		st := newStore(t)
		for _, n := range []string{"shards/val-00000.shard", "manifest.json", "shards/train-00001.shard", "shards/train-00000.shard", "shardsx"} {
			put(t, st, n, n)
		}
		tests := []struct {
			prefix string
			want   []string
		}{
			{"", []string{"manifest.json", "shards/train-00000.shard", "shards/train-00001.shard", "shards/val-00000.shard", "shardsx"}},
			{"shards/", []string{"shards/train-00000.shard", "shards/train-00001.shard", "shards/val-00000.shard"}},
			{"shards/train", []string{"shards/train-00000.shard", "shards/train-00001.shard"}},
			{"shards", []string{"shards/train-00000.shard", "shards/train-00001.shard", "shards/val-00000.shard", "shardsx"}},
			{"nothing/", nil},
			{"../", nil},
		}
		for _, tt := range tests {
			got, err := st.List(ctx, tt.prefix)
			if err != nil {
				t.Errorf("List(%q): %v", tt.prefix, err)
				continue
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
		}
	})
	t.Run("Delete", func(t *testing.T) {
		st := newStore(t)
		put(t, st, "a/x", "1")
		if err := st.Delete(ctx, "a/x"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := st.Stat(ctx, "a/x"); !errors.Is(err, store.ErrNotExist) {
			t.Errorf("Stat after Delete = %v, want ErrNotExist", err)
		}
		if names, _ := st.List(ctx, ""); len(names) != 0 {
			t.Errorf("List after Delete = %q, want none", names)
		}
	})
	t.Run("SizeMismatch", func(t *testing.T) {
		st := newStore(t)
		put(t, st, "x", "old")
		for _, size := range []int64{2, 4} {
			if err := st.Put(ctx, "x", strings.NewReader("new"), size); err == nil {
				t.Errorf("Put of 3 bytes with size %d succeeded", size)
			}
		}
		if got := get(t, st, "x"); got != "old" {
			t.Errorf("after failed Puts Get = %q, want %q", got, "old")
		}
	})
	t.Run("FailingReader", func(t *testing.T) {
		st := newStore(t)
		put(t, st, "x", "old")
		r := io.MultiReader(strings.NewReader("partial"), errReader{})
		if err := st.Put(ctx, "x", r, 100); err == nil {
			t.Fatal("Put from a failing reader succeeded")
		}
		if got := get(t, st, "x"); got != "old" {
			t.Errorf("after a failed Put Get = %q, want %q", got, "old")
		}
		if names, _ := st.List(ctx, ""); !slices.Equal(names, []string{"x"}) {
			t.Errorf("after a failed Put List = %q, want [x]", names)
		}
	})
	t.Run("BadNames", func(t *testing.T) {
		st := newStore(t)
		for _, name := range []string{"", ".", "..", "../x", "a/../../x", "/abs", "a//b", "a/", "./a", `a\b`, "a\x00b", "a\nb"} {
			if err := st.Put(ctx, name, strings.NewReader("x"), 1); err == nil {
				t.Errorf("Put(%q) succeeded, want an error", name)
			}
			if _, err := st.Get(ctx, name); err == nil || errors.Is(err, store.ErrNotExist) {
				t.Errorf("Get(%q) error = %v, want a name error", name, err)
			}
			if err := st.Delete(ctx, name); err == nil {
				t.Errorf("Delete(%q) succeeded, want an error", name)
			}
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }
