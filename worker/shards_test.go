package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

func testData(t *testing.T) (store.Store, *shard.Manifest) {
	t.Helper()
	dir := t.TempDir()
	fc := fashion.DefaultConfig()
	fc.Source, fc.Out = "../fashion/testdata", filepath.Join(dir, "images")
	fc.Size, fc.Train, fc.Val, fc.Test = 16, 60, 10, 10
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := fashion.Generate(context.Background(), fc, log); err != nil {
		t.Fatal(err)
	}
	bc := shard.DefaultBuildConfig()
	bc.Size, bc.MaxShardBytes = 16, 16*16*3*25 // several small shards
	st, err := store.NewLocal(filepath.Join(dir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := shard.Build(context.Background(), bc, fc.Out, st, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	return st, m
}

func TestShardCache(t *testing.T) {
	st, m := testData(t)
	train, _ := m.Split("train")
	if len(train.Shards) < 3 {
		t.Fatalf("want several shards, got %d", len(train.Shards))
	}
	c := NewShardCache(st, m, 2)
	ctx := context.Background()
	for _, sh := range train.Shards {
		c.Prefetch(ctx, sh.Name)
		recs, err := c.Records(ctx, sh.Name)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(recs)) != sh.Records || recs[0].ID != sh.FirstID {
			t.Errorf("%s: %d records from id %d, want %d from %d", sh.Name, len(recs), recs[0].ID, sh.Records, sh.FirstID)
		}
	}
	if n := len(c.entries); n > 2 {
		t.Errorf("cache holds %d shards, max 2", n)
	}
	if _, err := c.Records(ctx, "shards/nope.shard"); err == nil {
		t.Error("unknown shard accepted")
	}
	// A corrupted shard is an error, and a later good copy is read again.
	name := train.Shards[0].Name
	c2 := NewShardCache(st, m, 2)
	rc, _ := st.Get(ctx, name)
	good, _ := io.ReadAll(rc)
	rc.Close()
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 1
	if err := st.Put(ctx, name, bytes.NewReader(bad), int64(len(bad))); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Records(ctx, name); !errors.Is(err, shard.ErrCorrupt) {
		t.Errorf("corrupt shard: %v", err)
	}
	if err := st.Put(ctx, name, bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Records(ctx, name); err != nil {
		t.Errorf("retry after repair: %v", err)
	}
}

// Lookup finds records by dataset-wide ID across every shard of a split.
func TestShardCacheLookup(t *testing.T) {
	st, m := testData(t)
	train, _ := m.Split("train")
	val, _ := m.Split("val")
	c := NewShardCache(st, m, len(train.Shards))
	ctx := context.Background()
	if err := c.PrefetchSplit(ctx, "train"); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, sh := range train.Shards { // the last record of each shard, then the first
		ids = append(ids, sh.FirstID+uint64(sh.Records)-1, sh.FirstID)
	}
	recs, err := c.Lookup(ctx, "train", ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.ID != ids[i] {
			t.Errorf("record %d: got id %d", ids[i], r.ID)
		}
	}
	if len(c.entries) != len(train.Shards) {
		t.Errorf("cache holds %d of %d shards", len(c.entries), len(train.Shards))
	}
	for _, id := range []uint64{val.Shards[0].FirstID, 1 << 40} {
		if _, err := c.Lookup(ctx, "train", []uint64{id}); err == nil {
			t.Errorf("record %d outside the train split accepted", id)
		}
	}
}

// gatedStore holds every Get until open is closed.
type gatedStore struct {
	store.Store
	open chan struct{}
}

func (s gatedStore) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	select {
	case <-s.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.Get(ctx, name)
}

// The input stall (ShardCache.Stall, the worker's input_stall_s) counts the
// time Records waits for a read, and nothing when the records are there.
func TestShardCacheStall(t *testing.T) {
	st, m := testData(t)
	train, _ := m.Split("train")
	gs := gatedStore{Store: st, open: make(chan struct{})}
	c := NewShardCache(gs, m, 4)
	ctx := context.Background()
	const hold = 50 * time.Millisecond
	time.AfterFunc(hold, func() { close(gs.open) })
	t0 := time.Now()
	if _, err := c.Records(ctx, train.Shards[0].Name); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(t0)
	if s := c.Stall(); s < hold*9/10 || s > waited {
		t.Fatalf("stall %v after a read held for %v (Records took %v)", s, hold, waited)
	}
	// cached, or prefetched and read by the time it is asked for: no stall
	before := c.Stall()
	c.Prefetch(ctx, train.Shards[1].Name)
	for !c.ready(train.Shards[1].Name) {
		time.Sleep(time.Millisecond)
	}
	for _, name := range []string{train.Shards[0].Name, train.Shards[1].Name} {
		if _, err := c.Records(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.Stall(); s != before {
		t.Errorf("stall grew from %v to %v without a wait", before, s)
	}
}

// ready reports whether the shard's read has finished.
func (c *ShardCache) ready(name string) bool {
	c.mu.Lock()
	e := c.entries[name]
	c.mu.Unlock()
	if e == nil {
		return false
	}
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}
