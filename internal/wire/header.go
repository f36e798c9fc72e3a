package wire

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/grpc/mem"
)

// This file holds the encoding that every message's header shares: the
// prefix (magic, type, length), varint and string fields, and the dec
// reader whose first error sticks.

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func appendVarint(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }
func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func beginHeader(t MsgType, capacity int) []byte {
	b := make([]byte, prefixLen, capacity)
	b[0], b[1] = magic, byte(t)
	return b
}

func finishHeader(b []byte) ([]byte, error) {
	if len(b) > MaxHeaderBytes {
		return nil, fmt.Errorf("wire: header of %d bytes exceeds %d", len(b), MaxHeaderBytes)
	}
	binary.LittleEndian.PutUint16(b[2:], uint16(len(b)))
	return b, nil
}

func checkStrings(ss ...string) error {
	for _, s := range ss {
		if len(s) > MaxStringBytes {
			return fmt.Errorf("wire: string of %d bytes exceeds %d", len(s), MaxStringBytes)
		}
	}
	return nil
}

// dec reads header fields; the first error sticks.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
}

func (d *dec) uvarint(what string, max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > max {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) int(what string, max int) int { return int(d.uvarint(what, uint64(max))) }

func (d *dec) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) fixed64(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *dec) fixed32(what string) uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) bool(what string) bool { return d.uvarint(what, 1) == 1 }

// str decodes a string into *dst, keeping the old string (no allocation)
// when the bytes are equal.
func (d *dec) str(what string, dst *string) {
	n := d.int(what, MaxStringBytes)
	if d.err != nil {
		return
	}
	if len(d.b) < n {
		d.fail(what)
		return
	}
	if b := d.b[:n]; string(b) != *dst {
		*dst = string(b)
	}
	d.b = d.b[n:]
}

// copyFrom copies data[off:off+len(dst)] into dst.
func copyFrom(data mem.BufferSlice, off int, dst []byte) {
	for _, buf := range data {
		if len(dst) == 0 {
			return
		}
		p := buf.ReadOnlyData()
		if off >= len(p) {
			off -= len(p)
			continue
		}
		n := copy(dst, p[off:])
		off = 0
		dst = dst[n:]
	}
}

// readHeader returns the header bytes (prefix included) of a message of the
// wanted type, in scratch if it fits; total is data.Len().
func readHeader(data mem.BufferSlice, total int, want MsgType, scratch []byte) ([]byte, error) {
	if total < prefixLen {
		return nil, fmt.Errorf("%w: %w: %d bytes", ErrCorrupt, ErrTruncated, total)
	}
	var pre [prefixLen]byte
	copyFrom(data, 0, pre[:])
	if pre[0] != magic {
		return nil, fmt.Errorf("%w: bad magic %#x", ErrCorrupt, pre[0])
	}
	if MsgType(pre[1]) != want {
		return nil, fmt.Errorf("%w: message type %d, want %d", ErrCorrupt, pre[1], want)
	}
	h := int(binary.LittleEndian.Uint16(pre[2:]))
	if h < prefixLen {
		return nil, fmt.Errorf("%w: header length %d", ErrCorrupt, h)
	}
	if h > total {
		return nil, fmt.Errorf("%w: %w: header of %d bytes in a message of %d", ErrCorrupt, ErrTruncated, h, total)
	}
	var hdr []byte
	if h <= cap(scratch) {
		hdr = scratch[:h]
	} else {
		hdr = make([]byte, h)
	}
	copyFrom(data, 0, hdr)
	return hdr, nil
}

// decodeSmall decodes a payload-free message: fields reads the header after
// the prefix. Bytes after the fields and inside the header are ignored (room
// for later fields); bytes after the header are an error.
func decodeSmall(data mem.BufferSlice, want MsgType, fields func(d *dec)) error {
	total := data.Len()
	var scratch [512]byte
	hdr, err := readHeader(data, total, want, scratch[:0])
	if err != nil {
		return err
	}
	if len(hdr) != total {
		return fmt.Errorf("%w: %d bytes after a payload-free message", ErrCorrupt, total-len(hdr))
	}
	d := dec{b: hdr[prefixLen:]}
	fields(&d)
	return d.err
}

func oneBuffer(b []byte) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(b)} }

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func materialize(s mem.BufferSlice, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return s.Materialize(), nil
}
