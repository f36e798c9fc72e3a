package shard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/tailorml/tailor/store"
)

// ReadShard streams the records of one shard to fn, in ID order. It checks
// the header against the manifest (geometry, record count and first ID), each
// record's CRC32-C and label indices, and, after the last record, the file's
// size and SHA-256 against info. Because the SHA-256 is only known at the
// end, fn may have seen records of a shard that then fails; a caller that
// must not act on such records should buffer until ReadShard returns nil.
// Errors about damaged bytes match ErrCorrupt. An error from fn is returned
// as is.
func ReadShard(ctx context.Context, st store.Store, info ShardInfo, m *Manifest, fn func(Record) error) error {
	rc, err := st.Get(ctx, info.Name)
	if err != nil {
		return fmt.Errorf("read shard: %w", err)
	}
	defer rc.Close()
	if err := readShard(ctx, rc, info, m, fn); err != nil {
		return fmt.Errorf("read shard %s: %w", info.Name, err)
	}
	return nil
}

// readShard is ReadShard on a stream.
func readShard(ctx context.Context, r io.Reader, info ShardInfo, m *Manifest, fn func(Record) error) error {
	cr := &countHashReader{r: r, h: sha256.New()}
	sr, err := NewReader(cr)
	if err != nil {
		return err
	}
	h := sr.Header()
	if h.Width != m.Width || h.Height != m.Height || h.Channels != m.Channels {
		return corruptf(ErrMismatch, "geometry %dx%dx%d, manifest says %dx%dx%d", h.Width, h.Height, h.Channels, m.Width, m.Height, m.Channels)
	}
	if int64(h.Records) != info.Records || h.FirstID != info.FirstID {
		return corruptf(ErrMismatch, "records %d from id %d, manifest says %d from id %d", h.Records, h.FirstID, info.Records, info.FirstID)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := sr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if n := len(rec.Labels); n > 0 && int(rec.Labels[n-1]) >= len(m.Labels) {
			return corruptf(ErrMismatch, "record %d: label index %d, vocabulary has %d", rec.ID, rec.Labels[n-1], len(m.Labels))
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if cr.n != info.Bytes {
		return corruptf(ErrMismatch, "%d bytes, manifest says %d", cr.n, info.Bytes)
	}
	if sum := hex.EncodeToString(cr.h.Sum(nil)); sum != info.SHA256 {
		return corruptf(ErrChecksum, "sha256 %s, manifest says %s", sum, info.SHA256)
	}
	return nil
}

// countHashReader counts and hashes what passes through it.
type countHashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (c *countHashReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	return n, err
}

// ReadSplit reads every record of a split into memory, in ID order.
func ReadSplit(ctx context.Context, st store.Store, m *Manifest, split string) ([]Record, error) {
	s, err := m.Split(split)
	if err != nil {
		return nil, err
	}
	recs := make([]Record, 0, min(s.Records, 1<<16)) // the manifest's count is not trusted for allocation
	for _, info := range s.Shards {
		err := ReadShard(ctx, st, info, m, func(r Record) error {
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read split %s: %w", split, err)
		}
	}
	return recs, nil
}
