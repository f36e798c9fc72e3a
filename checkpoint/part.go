// Package checkpoint owns the files of a run's checkpoints: one blob per
// parameter server (its weights, optimizer moments and version), a manifest
// (meta.json) that names the blobs with their SHA-256 and holds everything
// else a resume needs (data position, validation history, job spec, label
// vocabulary), where they live in the object store, and the pointer to the
// newest complete checkpoint in etcd. FORMAT.md in this folder describes the
// bytes.
package checkpoint

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"

	"github.com/tailorml/tailor/internal/wire"
)

// ErrCorrupt is wrapped by every error about bytes that are not a valid
// checkpoint object (bad magic, checksum, shape, or truncation).
var ErrCorrupt = errors.New("checkpoint: corrupt")

// partMagic opens a part blob; the digit is the format version.
const partMagic = "TAILORCP1\n"

// Limits that keep a corrupt header from asking for absurd allocations.
const (
	maxHeaderBytes = 1 << 20
	maxPartFloats  = 1 << 30
)

// Part is one parameter server's share of a checkpoint.
type Part struct {
	Run      string      `json:"run"`
	Server   int         `json:"server"`  // index in the plan
	Servers  int         `json:"servers"` // servers in the plan
	Plan     uint64      `json:"plan"`    // wire.Plan fingerprint
	Version  int64       `json:"version"` // weights version
	AdamStep int64       `json:"adam_step"`
	Parts    []wire.Part `json:"parts"`
	// Weights, M and V are aligned with Parts; M and V are empty for State
	// parts (no optimizer state).
	Weights [][]float32 `json:"-"`
	M, V    [][]float32 `json:"-"`
}

// Validate checks that the arrays match the parts.
func (p *Part) Validate() error {
	if p.Server < 0 || p.Servers < 1 || p.Server >= p.Servers || p.Version < 0 || p.AdamStep < 0 {
		return fmt.Errorf("%w: server %d of %d, version %d, adam step %d", ErrCorrupt, p.Server, p.Servers, p.Version, p.AdamStep)
	}
	if len(p.Weights) != len(p.Parts) || len(p.M) != len(p.Parts) || len(p.V) != len(p.Parts) {
		return fmt.Errorf("%w: %d parts, %d/%d/%d arrays", ErrCorrupt, len(p.Parts), len(p.Weights), len(p.M), len(p.V))
	}
	total := 0
	for i, q := range p.Parts {
		if q.Len < 0 || q.Len > maxPartFloats {
			return fmt.Errorf("%w: part %d has length %d", ErrCorrupt, i, q.Len)
		}
		total += q.Len
		if total > maxPartFloats {
			return fmt.Errorf("%w: more than %d floats", ErrCorrupt, maxPartFloats)
		}
		want := q.Len
		if q.Kind != wire.Param {
			want = 0
		}
		if len(p.Weights[i]) != q.Len || len(p.M[i]) != want || len(p.V[i]) != want {
			return fmt.Errorf("%w: part %d (%s) holds %d/%d/%d floats, want %d/%d/%d", ErrCorrupt, i, q.Name,
				len(p.Weights[i]), len(p.M[i]), len(p.V[i]), q.Len, want, want)
		}
	}
	return nil
}

// PartSize is the number of bytes WritePart writes for p.
func PartSize(p *Part) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	hdr, err := json.Marshal(p)
	if err != nil {
		return 0, err
	}
	n := int64(len(partMagic)) + 4 + int64(len(hdr)) + 32
	for i := range p.Parts {
		n += 4 * int64(len(p.Weights[i])+len(p.M[i])+len(p.V[i]))
	}
	return n, nil
}

// WritePart encodes p to w: magic, header length and JSON header, then the
// float32 arrays (little endian) part by part — weights, then for Param
// parts M and V — and last the SHA-256 of everything before it. It returns
// that digest and the bytes written.
func WritePart(w io.Writer, p *Part) (sum [32]byte, n int64, err error) {
	if err := p.Validate(); err != nil {
		return sum, 0, err
	}
	hdr, err := json.Marshal(p)
	if err != nil {
		return sum, 0, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	bw.WriteString(partMagic)
	var l [4]byte
	binary.LittleEndian.PutUint32(l[:], uint32(len(hdr)))
	bw.Write(l[:])
	bw.Write(hdr)
	for i := range p.Parts {
		for _, a := range [][]float32{p.Weights[i], p.M[i], p.V[i]} {
			bw.Write(wire.Bytes(a))
		}
	}
	if err := bw.Flush(); err != nil {
		return sum, cw.n, fmt.Errorf("write checkpoint part: %w", err)
	}
	copy(sum[:], h.Sum(nil))
	if _, err := w.Write(sum[:]); err != nil {
		return sum, cw.n, fmt.Errorf("write checkpoint part: %w", err)
	}
	return sum, cw.n + 32, nil
}

// ReadPart decodes a part blob of size bytes, checking its trailing
// SHA-256 and, if want is not nil, that the digest is *want (the one the
// manifest recorded).
func ReadPart(r io.Reader, size int64, want *[32]byte) (*Part, error) {
	if size < int64(len(partMagic))+4+32 {
		return nil, fmt.Errorf("%w: part of %d bytes", ErrCorrupt, size)
	}
	h := sha256.New()
	body := &hashReader{r: bufio.NewReaderSize(io.LimitReader(r, size-32), 1<<20), h: h}
	magic := make([]byte, len(partMagic))
	if _, err := io.ReadFull(body, magic); err != nil || string(magic) != partMagic {
		return nil, fmt.Errorf("%w: not a checkpoint part (magic %q)", ErrCorrupt, magic)
	}
	var l [4]byte
	if _, err := io.ReadFull(body, l[:]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	n := binary.LittleEndian.Uint32(l[:])
	if n > maxHeaderBytes || int64(n) > size {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrCorrupt, n)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(body, hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrCorrupt, err)
	}
	p := new(Part)
	if err := json.Unmarshal(hdr, p); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrCorrupt, err)
	}
	// the arrays must fill the rest exactly: check before allocating
	floats := int64(0)
	for i, q := range p.Parts {
		if q.Len < 0 || q.Len > maxPartFloats {
			return nil, fmt.Errorf("%w: part %d has length %d", ErrCorrupt, i, q.Len)
		}
		k := int64(1)
		if q.Kind == wire.Param {
			k = 3
		}
		floats += k * int64(q.Len)
	}
	if rest := size - 32 - int64(len(partMagic)) - 4 - int64(n); floats*4 != rest {
		return nil, fmt.Errorf("%w: header describes %d bytes of arrays, the blob holds %d", ErrCorrupt, floats*4, rest)
	}
	p.Weights, p.M, p.V = make([][]float32, len(p.Parts)), make([][]float32, len(p.Parts)), make([][]float32, len(p.Parts))
	read := func(n int) ([]float32, error) {
		a := make([]float32, n)
		if _, err := io.ReadFull(body, wire.Bytes(a)); err != nil {
			return nil, fmt.Errorf("%w: arrays: %w", ErrCorrupt, err)
		}
		return a, nil
	}
	var err error
	for i, q := range p.Parts {
		if p.Weights[i], err = read(q.Len); err != nil {
			return nil, err
		}
		if q.Kind == wire.Param {
			if p.M[i], err = read(q.Len); err != nil {
				return nil, err
			}
			if p.V[i], err = read(q.Len); err != nil {
				return nil, err
			}
		} else {
			p.M[i], p.V[i] = []float32{}, []float32{}
		}
	}
	var trailer [32]byte
	if _, err := io.ReadFull(r, trailer[:]); err != nil {
		return nil, fmt.Errorf("%w: checksum: %w", ErrCorrupt, err)
	}
	var got [32]byte
	copy(got[:], h.Sum(nil))
	if got != trailer {
		return nil, fmt.Errorf("%w: SHA-256 mismatch (the blob was damaged)", ErrCorrupt)
	}
	if want != nil && got != *want {
		return nil, fmt.Errorf("%w: SHA-256 %x, the manifest says %x", ErrCorrupt, got[:8], want[:8])
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	for i := range p.Parts {
		for _, a := range [][]float32{p.Weights[i], p.M[i], p.V[i]} {
			if !finite(a) {
				return nil, fmt.Errorf("%w: part %d holds NaN or Inf", ErrCorrupt, i)
			}
		}
	}
	return p, nil
}

func finite(a []float32) bool {
	for _, v := range a {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	return true
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type hashReader struct {
	r io.Reader
	h hash.Hash
}

func (r *hashReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	return n, err
}
