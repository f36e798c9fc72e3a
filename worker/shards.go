package worker

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// ShardCache keeps the most recently used shards of a data set in memory,
// reading each from the store once (checksums verified) even when several
// goroutines ask for it at the same time. Prefetch starts a read in the
// background so that the records are there when the batch needs them.
type ShardCache struct {
	st  store.Store
	man *shard.Manifest
	max int

	mu      sync.Mutex
	entries map[string]*cacheEntry
	clock   int64
	stall   time.Duration // total time Records waited for a read
}

type cacheEntry struct {
	done    chan struct{}
	recs    []shard.Record
	err     error
	lastUse int64
}

// NewShardCache caches up to size shards of the data set described by man.
func NewShardCache(st store.Store, man *shard.Manifest, size int) *ShardCache {
	return &ShardCache{st: st, man: man, max: max(1, size), entries: map[string]*cacheEntry{}}
}

func (c *ShardCache) info(name string) (shard.ShardInfo, error) {
	for _, sp := range c.man.Splits {
		for _, sh := range sp.Shards {
			if sh.Name == name {
				return sh, nil
			}
		}
	}
	return shard.ShardInfo{}, fmt.Errorf("shard %q is not in the manifest", name)
}

// Prefetch starts reading a shard if it is not cached or being read.
func (c *ShardCache) Prefetch(ctx context.Context, name string) {
	_, _ = c.entry(ctx, name)
}

func (c *ShardCache) entry(ctx context.Context, name string) (*cacheEntry, error) {
	info, err := c.info(name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock++
	if e, ok := c.entries[name]; ok {
		e.lastUse = c.clock
		return e, nil
	}
	c.evictLocked()
	e := &cacheEntry{done: make(chan struct{}), lastUse: c.clock}
	c.entries[name] = e
	go func() {
		defer close(e.done)
		var recs []shard.Record
		e.err = shard.ReadShard(context.WithoutCancel(ctx), c.st, info, c.man, func(r shard.Record) error {
			recs = append(recs, r)
			return nil
		})
		if e.err == nil {
			e.recs = recs
		}
	}()
	return e, nil
}

// evictLocked drops least recently used finished entries beyond max-1.
func (c *ShardCache) evictLocked() {
	for len(c.entries) >= c.max {
		var victim string
		var oldest int64 = -1
		for name, e := range c.entries {
			select {
			case <-e.done:
			default:
				continue // being read: keep
			}
			if oldest < 0 || e.lastUse < oldest {
				victim, oldest = name, e.lastUse
			}
		}
		if victim == "" {
			return
		}
		delete(c.entries, victim)
	}
}

// Records returns a shard's records, in shard order, waiting for the read if
// needed. A failed read is forgotten so that the next call retries.
func (c *ShardCache) Records(ctx context.Context, name string) ([]shard.Record, error) {
	e, err := c.entry(ctx, name)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.done:
	default:
		t0 := time.Now()
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
		c.stall += time.Since(t0)
		c.mu.Unlock()
	}
	if e.err != nil {
		c.mu.Lock()
		if c.entries[name] == e {
			delete(c.entries, name)
		}
		c.mu.Unlock()
		return nil, fmt.Errorf("read %s: %w", name, e.err)
	}
	return e.recs, nil
}

// Lookup returns the records with the given dataset-wide IDs, all of one
// split, reading (or waiting for) the shards that hold them.
func (c *ShardCache) Lookup(ctx context.Context, split string, ids []uint64) ([]*shard.Record, error) {
	sp, err := c.man.Split(split)
	if err != nil {
		return nil, err
	}
	recs := make([]*shard.Record, len(ids))
	for i, id := range ids {
		// the split's shards hold consecutive IDs, in order
		k := sort.Search(len(sp.Shards), func(k int) bool { return sp.Shards[k].FirstID+uint64(sp.Shards[k].Records) > id })
		if k == len(sp.Shards) || id < sp.Shards[k].FirstID {
			return nil, fmt.Errorf("record %d is not in the %s split", id, split)
		}
		all, err := c.Records(ctx, sp.Shards[k].Name)
		if err != nil {
			return nil, err
		}
		o := id - sp.Shards[k].FirstID
		if o >= uint64(len(all)) {
			return nil, fmt.Errorf("record %d outside shard %s (%d records)", id, sp.Shards[k].Name, len(all))
		}
		recs[i] = &all[o]
	}
	return recs, nil
}

// PrefetchSplit starts reading every shard of a split (as many as the cache
// holds).
func (c *ShardCache) PrefetchSplit(ctx context.Context, split string) error {
	sp, err := c.man.Split(split)
	if err != nil {
		return err
	}
	for _, sh := range sp.Shards[:min(len(sp.Shards), c.max)] {
		c.Prefetch(ctx, sh.Name)
	}
	return nil
}

// Stall is the total time Records spent waiting for shard reads: the input
// pipeline's share of a worker's idle time.
func (c *ShardCache) Stall() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stall
}
