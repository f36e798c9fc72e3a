package paramserver

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	"github.com/tailorml/tailor/internal/wire"
)

// Pull implements wire.Handler: it waits until the weights exist with a
// version of at least req.MinVersion, then streams them in chunks of the
// requested size, in part order.
//
// Pulls read an immutable copy of the weights taken once per version and
// shared by every puller of that version; chunks are handed to gRPC
// without copying and the copy is recycled when gRPC has written the last
// of them. The copy is checksummed as it is made, in the chunk size of
// the pull that made it: pulls in that size send the stored CRCs, others
// checksum as they send. Updates never wait for a pull.
func (s *Server) Pull(req *wire.PullRequest, st grpc.ServerStream) error {
	var reason, detail string
	switch {
	case req.RunID != s.cfg.RunID:
		reason, detail = wire.ReasonRunID, fmt.Sprintf("run %q", req.RunID)
	case req.Plan != s.plan.Fingerprint() || req.Server != s.cfg.Index:
		reason, detail = wire.ReasonPlan, fmt.Sprintf("plan %016x for server %d; this is server %d of plan %016x", req.Plan, req.Server, s.cfg.Index, s.plan.Fingerprint())
	}
	if reason != "" {
		s.m.pullRejected[reasonIndex[reason]].Add(1)
		s.log.Warn("pull rejected", "worker", req.WorkerID, "reason", reason, "detail", detail)
		return wire.RejectStatus(reason, detail)
	}
	chunk := wire.ClampChunkBytes(req.ChunkBytes) / 4
	sum := req.Flags&wire.FlagChecksum != 0
	snap, err := s.awaitSnapshot(st.Context(), req.MinVersion, chunk, sum)
	if err != nil {
		if err == ErrClosed {
			s.m.pullRejected[reasonIndex[wire.ReasonClosed]].Add(1)
			return wire.RejectStatus(wire.ReasonClosed, "")
		}
		return err
	}
	defer snap.unref()
	sums := snap.sums(chunk, sum)
	ch := wire.Chunk{
		Type: wire.TypePullChunk, RunID: s.cfg.RunID, WorkerID: req.WorkerID, Plan: s.plan.Fingerprint(), Flags: req.Flags & wire.FlagChecksum,
		Step: snap.version, Version: snap.version, Server: s.cfg.Index,
	}
	j := 0 // the chunk's index in the pull
	for _, p := range s.parts {
		for off := 0; off < p.Len; off += chunk {
			n := min(chunk, p.Len-off)
			b := wire.Bytes(snap.data[p.Flat+off : p.Flat+off+n])
			b = b[:len(b):len(b)]
			ch.Part, ch.Offset, ch.Payload, ch.Buf = p.ID, off, nil, nil
			if sums != nil {
				ch.CRC, ch.HasCRC = sums[j], true
			}
			j++
			if mem.IsBelowBufferPoolingThreshold(len(b)) {
				// gRPC does not reference-count small buffers.
				ch.Payload = bytes.Clone(b)
			} else {
				snap.ref()
				ch.Buf = mem.NewBuffer(&b, snap)
			}
			if err := st.SendMsg(&ch); err != nil {
				return err
			}
			s.m.bytesOut.Add(uint64(len(b)))
		}
	}
	return nil
}

// awaitSnapshot waits for weights of at least version min and returns a
// reference to the published copy of the current ones. A new copy is
// checksummed, if sum, in chunks of chunk floats as it is made: the
// checksums are then computed once per version, from cache.
func (s *Server) awaitSnapshot(ctx context.Context, min int64, chunk int, sum bool) (*snapshot, error) {
	s.mu.Lock()
	for !s.initialised || s.version < min {
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		ch := s.verCh
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.pub == nil {
		sn := s.snaps.get()
		sn.fill(s.weights, s.parts, chunk, sum)
		sn.version = s.version
		sn.refs.Store(1) // the publication's reference
		s.pub = sn
	}
	s.pub.ref()
	return s.pub, nil
}

// snapshot is an immutable copy of the weights at one version, shared by
// pulls. It is its own mem.BufferPool: gRPC "returns" a chunk by calling
// Put once the chunk is written, which drops a reference.
type snapshot struct {
	pool    *snapPool
	version int64
	data    []float32
	refs    atomic.Int64
	chunk   int      // floats per chunk of crcs
	crcs    []uint32 // CRC-32C of every chunk of a pull, in part order; nil: not computed
}

// snapPiece is how much fill copies before it checksums what it copied
// (from L1, instead of reading the copy back from memory).
const snapPiece = 16 << 10 / 4

// fill copies weights into the snapshot and, if sum, computes the
// CRC-32C of each chunk of chunk floats of a pull of parts; big snapshots
// on every core (pullers wait for it).
func (sn *snapshot) fill(weights []float32, parts []wire.Part, chunk int, sum bool) {
	if !sum {
		copy(sn.data, weights)
		sn.chunk, sn.crcs = 0, nil
		return
	}
	type span struct{ lo, hi int } // a chunk, in floats of the server's layout
	var spans []span
	for _, p := range parts {
		for off := 0; off < p.Len; off += chunk {
			spans = append(spans, span{p.Flat + off, p.Flat + min(p.Len, off+chunk)})
		}
	}
	sn.chunk = chunk
	sn.crcs = slices.Grow(sn.crcs[:0], len(spans))[:len(spans)]
	fillChunk := func(k int) {
		var crc uint32
		for lo := spans[k].lo; lo < spans[k].hi; lo += snapPiece {
			hi := min(spans[k].hi, lo+snapPiece)
			copy(sn.data[lo:hi], weights[lo:hi])
			crc = crc32.Update(crc, castagnoli, wire.Bytes(sn.data[lo:hi]))
		}
		sn.crcs[k] = crc
	}
	workers := min(runtime.GOMAXPROCS(0), len(spans))
	if len(weights) < parallelFillFloats || workers < 2 {
		for k := range spans {
			fillChunk(k)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	work := func() {
		for k := int(next.Add(1) - 1); k < len(spans); k = int(next.Add(1) - 1) {
			fillChunk(k)
		}
	}
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
}

// parallelFillFloats is the snapshot size from which fill uses every core.
const parallelFillFloats = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sums returns the chunks' checksums for a pull in chunks of chunk floats
// with checksums (sum), or nil if they must be computed as chunks are sent.
func (sn *snapshot) sums(chunk int, sum bool) []uint32 {
	if !sum || sn.crcs == nil || sn.chunk != chunk {
		return nil
	}
	return sn.crcs
}

func (sn *snapshot) ref() { sn.refs.Add(1) }

func (sn *snapshot) unref() {
	switch n := sn.refs.Add(-1); {
	case n == 0:
		sn.pool.put(sn)
	case n < 0:
		panic("paramserver: snapshot released twice")
	}
}

// Get implements mem.BufferPool; never called.
func (sn *snapshot) Get(int) *[]byte { panic("paramserver: snapshot is not a real buffer pool") }

// Put implements mem.BufferPool: gRPC is done with one chunk.
func (sn *snapshot) Put(*[]byte) { sn.unref() }

// snapPool recycles snapshots.
type snapPool struct {
	mu   sync.Mutex
	size int
	free []*snapshot
}

const maxFreeSnapshots = 2

func (p *snapPool) get() *snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		sn := p.free[n-1]
		p.free = p.free[:n-1]
		return sn
	}
	return &snapshot{pool: p, data: make([]float32, p.size)}
}

func (p *snapPool) put(sn *snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < maxFreeSnapshots {
		p.free = append(p.free, sn)
	}
}
