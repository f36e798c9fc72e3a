package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/tailorml/tailor/fashion"
	"github.com/tailorml/tailor/shard"
)

func testData(t *testing.T) (shard.Store, *shard.Manifest) {
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
	st, err := shard.NewLocalStore(filepath.Join(dir, "shards"))
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
