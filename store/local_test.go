package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailorml/tailor/store"
	"github.com/tailorml/tailor/store/storetest"
)

func TestLocalContract(t *testing.T) {
	storetest.TestStore(t, func(t *testing.T) store.Store {
		st, err := store.NewLocal(filepath.Join(t.TempDir(), "store"))
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestMemStoreContract(t *testing.T) {
	storetest.TestStore(t, func(t *testing.T) store.Store { return storetest.NewMemStore() })
}

func TestLocalFailedPutLeavesNoFiles(t *testing.T) {
	dir := t.TempDir()
	st, err := store.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Put(ctx, "a/x", strings.NewReader("short"), 10); err == nil {
		t.Fatal("Put with a short reader succeeded")
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Errorf("files left after a failed Put: %q", files)
	}
}

func TestLocalHidesTempFiles(t *testing.T) {
	dir := t.TempDir()
	st, err := store.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A crash between create and rename leaves a temp file behind.
	if err := os.WriteFile(filepath.Join(dir, ".tailor-tmp-123"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	names, err := st.List(context.Background(), "")
	if err != nil || len(names) != 0 {
		t.Errorf("List = %q, %v; want none", names, err)
	}
	if _, err := st.Get(context.Background(), ".tailor-tmp-123"); err == nil {
		t.Error("Get of a temp file name succeeded")
	}
}

func TestLocalCanceledPut(t *testing.T) {
	st, err := store.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.Put(ctx, "x", strings.NewReader("data"), 4); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a canceled context = %v, want context.Canceled", err)
	}
}

func TestNewLocalOnAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := store.NewLocal(f); err == nil {
		t.Error("NewLocal on a regular file succeeded")
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		url     string
		wantDir string // "" means an error is expected
		wantErr string
	}{
		{url: dir, wantDir: dir},
		{url: "file://" + dir, wantDir: dir},
		{url: "file://localhost" + dir, wantDir: dir},
		{url: "s3://Bad_Bucket/prefix", wantErr: "bucket name"},
		{url: "http://example.com/x", wantErr: "unsupported scheme"},
		{url: "file://otherhost/x", wantErr: "host"},
		{url: "", wantErr: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			st, err := store.Open(context.Background(), tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open(%q) error = %v, want one containing %q", tt.url, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tt.url, err)
			}
			ls, ok := st.(*store.Local)
			if !ok || ls.Root() != tt.wantDir {
				t.Errorf("Open(%q) = %#v, want a Local at %s", tt.url, st, tt.wantDir)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"manifest.json", true},
		{"shards/train-00000.shard", true},
		{"a/b/c", true},
		{"dé/ü", true},
		{"", false},
		{".", false},
		{"..", false},
		{"../x", false},
		{"a/../b", false},
		{"/abs", false},
		{"a//b", false},
		{"a/", false},
		{`a\b`, false},
		{"a\tb", false},
		{"\xff", false},
		{".tailor-tmp-1", false},
		{"x/.tailor-tmp-1", false},
	}
	for _, tt := range tests {
		if err := store.ValidName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
