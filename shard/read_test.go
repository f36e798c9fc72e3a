package shard

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tailorml/tailor/store"
)

// builtStore builds the split tree with one record per shard and returns the store and manifest.
func builtStore(t *testing.T) (*store.Local, *Manifest) {
	t.Helper()
	st := newStore(t)
	cfg := testConfig(t)
	return st, build(t, cfg, splitTree(t), st)
}

func TestReadShardDetectsDamage(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, m *Manifest)
		want   error
	}{
		{"flipped pixel", func(t *testing.T, p string, m *Manifest) {
			b := readFile(t, p)
			b[len(b)-10] ^= 0xff
			writeBytes(t, p, b)
		}, ErrChecksum},
		{"truncated", func(t *testing.T, p string, m *Manifest) {
			b := readFile(t, p)
			writeBytes(t, p, b[:len(b)-100])
		}, ErrTruncated},
		{"appended", func(t *testing.T, p string, m *Manifest) {
			writeBytes(t, p, append(readFile(t, p), 1, 2, 3))
		}, ErrCorrupt},
		{"bad magic", func(t *testing.T, p string, m *Manifest) {
			b := readFile(t, p)
			copy(b, "GARBAGE!")
			writeBytes(t, p, b)
		}, ErrBadMagic},
		{"sha differs", func(t *testing.T, p string, m *Manifest) {
			m.Splits[0].Shards[0].SHA256 = "00000000000000000000000000000000000000000000000000000000000000ff"
		}, ErrChecksum},
		{"geometry differs", func(t *testing.T, p string, m *Manifest) {
			m.Width, m.Height = 4, 4
		}, ErrMismatch},
		{"other shard in its place", func(t *testing.T, p string, m *Manifest) {
			// A valid shard of the same split under the wrong name: header ids differ.
			other := filepath.Join(filepath.Dir(p), "val-00000.shard")
			writeBytes(t, p, readFile(t, other))
		}, ErrMismatch},
		{"label outside vocabulary", func(t *testing.T, p string, m *Manifest) {
			m.Labels = m.Labels[:1]
		}, ErrMismatch},
		{"missing", func(t *testing.T, p string, m *Manifest) {
			os.Remove(p)
		}, store.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, m := builtStore(t)
			info := &m.Splits[0].Shards[0]
			tt.damage(t, filepath.Join(st.Root(), filepath.FromSlash(info.Name)), m)
			n := 0
			err := ReadShard(ctx, st, *info, m, func(Record) error { n++; return nil })
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadShard error = %v, want %v", err, tt.want)
			}
			if _, err := ReadSplit(ctx, st, m, SplitTrain); !errors.Is(err, tt.want) {
				t.Errorf("ReadSplit error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReadShardIntact(t *testing.T) {
	st, m := builtStore(t)
	for _, s := range m.Splits {
		for _, info := range s.Shards {
			next := info.FirstID
			err := ReadShard(context.Background(), st, info, m, func(r Record) error {
				if r.ID != next {
					t.Errorf("%s: id %d, want %d", info.Name, r.ID, next)
				}
				next++
				return nil
			})
			if err != nil {
				t.Errorf("%s: %v", info.Name, err)
			}
		}
	}
}

func TestReadShardCallbackError(t *testing.T) {
	st, m := builtStore(t)
	stop := errors.New("stop")
	err := ReadShard(context.Background(), st, m.Splits[0].Shards[0], m, func(Record) error { return stop })
	if !errors.Is(err, stop) || errors.Is(err, ErrCorrupt) {
		t.Errorf("error = %v, want the callback's error only", err)
	}
}

func TestReadSplitUnknown(t *testing.T) {
	st, m := builtStore(t)
	if _, err := ReadSplit(context.Background(), st, m, "holdout"); !errors.Is(err, ErrUnknownSplit) {
		t.Errorf("error = %v, want ErrUnknownSplit", err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeBytes(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
