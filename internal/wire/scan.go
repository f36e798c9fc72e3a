package wire

import (
	"fmt"
	"hash/crc32"
	"runtime"
	"sync"
	"sync/atomic"
)

// This file holds the checks of a push's tensors before anything is sent:
// shapes, then one pass, split among goroutines, that looks for NaN and Inf
// and computes each float32 chunk's CRC-32C while the floats are in cache.

// checkPush checks tensors for a push (or Init) on stream and returns the
// CRC-32C of every float32 chunk it will send (nil without checksums): one
// pass over the tensors for both.
func (c *Client) checkPush(stream int, tensors [][]float32) (*chunkSums, error) {
	if err := c.checkShape(tensors); err != nil {
		return nil, err
	}
	sums := c.newSums(stream)
	var jobs []scanJob
	for t, data := range tensors {
		jobs = c.appendScan(jobs, t, data, sums)
	}
	if !runScan(jobs) {
		for t, data := range tensors { // name the first bad tensor in spec order
			if !Finite(data) {
				return nil, fmt.Errorf("%w: %q", ErrNonFinite, c.plan.Spec[t].Name)
			}
		}
	}
	return sums, nil
}

// chunkSums holds the CRC-32C of a push's float32 chunks, computed while
// they are checked for NaN and Inf, so that sending does not read the
// tensors once more to checksum them.
type chunkSums struct {
	crc  [][]uint32 // per server, per chunk (Client.firstChunk)
	skip bool       // Param parts are compressed: their payloads are checksummed when encoded
}

// newSums is the chunkSums of a push (or Init) on stream; nil without
// checksums.
func (c *Client) newSums(stream int) *chunkSums {
	if c.flags&FlagChecksum == 0 {
		return nil
	}
	s := &chunkSums{crc: make([][]uint32, len(c.chunks)), skip: stream == streamPush && c.enc != nil}
	for i, n := range c.chunks {
		s.crc[i] = make([]uint32, n)
	}
	return s
}

// covers reports whether the push's CRCs of part p are precomputed here.
func (s *chunkSums) covers(p Part) bool { return s != nil && !(s.skip && p.Kind == Param) }

// sum is the precomputed CRC-32C of chunk j of server i's push, if known.
func (s *chunkSums) sum(i, j int, p Part) (uint32, bool) {
	if !s.covers(p) {
		return 0, false
	}
	return s.crc[i][j], true
}

// scanTensor reports whether tensor t (data) is finite and, with sums,
// records the CRC-32C of each chunk its parts make.
func (c *Client) scanTensor(t int, data []float32, sums *chunkSums) bool {
	return runScan(c.appendScan(nil, t, data, sums))
}

// scanJob is one chunk to check for NaN and Inf and, if crc is not nil,
// to checksum into *crc.
type scanJob struct {
	b   []byte
	crc *uint32
}

// appendScan appends the chunks of tensor t's parts (data) to jobs.
func (c *Client) appendScan(jobs []scanJob, t int, data []float32, sums *chunkSums) []scanJob {
	for _, r := range c.where[t] {
		p := c.plan.ServerParts(r.server)[r.k]
		var crc []uint32
		if sums.covers(p) {
			crc = sums.crc[r.server][c.firstChunk[r.server][r.k]:]
		}
		b := Bytes(data[p.Offset : p.Offset+p.Len])
		for j := 0; len(b) > 0; j++ {
			n := min(len(b), 4*c.chunkFloats)
			job := scanJob{b: b[:n]}
			if crc != nil {
				job.crc = &crc[j]
			}
			jobs = append(jobs, job)
			b = b[n:]
		}
	}
	return jobs
}

// parallelScanBytes is the size from which runScan uses every core: the
// tensors are then read from memory once, at the speed of all cores,
// while the servers wait.
const parallelScanBytes = 4 << 20

// runScan runs jobs, each piece checked and checksummed while in cache
// (the data is read from memory once), on every core if they are big; it
// reports whether every chunk is finite (stopping at the first that is
// not).
func runScan(jobs []scanJob) bool {
	total := 0
	for _, j := range jobs {
		total += len(j.b)
	}
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	if total < parallelScanBytes || workers < 2 {
		for _, j := range jobs {
			if !j.run() {
				return false
			}
		}
		return true
	}
	var next atomic.Int64
	var bad atomic.Bool
	var wg sync.WaitGroup
	work := func() {
		for k := int(next.Add(1) - 1); k < len(jobs) && !bad.Load(); k = int(next.Add(1) - 1) {
			if !jobs[k].run() {
				bad.Store(true)
			}
		}
	}
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return !bad.Load()
}

func (j scanJob) run() bool {
	var sum uint32
	for o := 0; o < len(j.b); o += checkPiece {
		piece := j.b[o:min(len(j.b), o+checkPiece)]
		if !finiteBytes(piece) {
			return false
		}
		if j.crc != nil {
			sum = crc32.Update(sum, castagnoli, piece)
		}
	}
	if j.crc != nil {
		*j.crc = sum
	}
	return true
}
