package shard

import (
	"bufio"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"unicode/utf8"
)

// Shard file constants. FORMAT.md is the normative description.
const (
	// Magic opens every shard file.
	Magic = "TLRSHARD"
	// FormatVersion is the shard file version this package writes and reads.
	FormatVersion = 1
	// Channels is the only channel count: RGB.
	Channels = 3
	// MaxSide bounds image width and height.
	MaxSide = 4096
	// MaxSourceLen bounds a record's source path in bytes.
	MaxSourceLen = 4096
	// MaxLabels bounds the vocabulary, so label indices fit a uint16.
	MaxLabels = math.MaxUint16

	headerSize = 36
	// recordFixed is the body size of a record with no labels, empty source and no pixels.
	recordFixed = 8 + 2 + 2
	// recordFrame is the length prefix plus the trailing CRC.
	recordFrame = 4 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one labelled image.
type Record struct {
	// ID is unique within the dataset: the splits' records are numbered
	// 0..N-1 in split order (train, val, test) and sorted source order.
	ID uint64
	// Labels are sorted, distinct indices into Manifest.Labels. Empty means
	// no label is present (a negative for every class).
	Labels []uint16
	// Pixels holds Height*Width*3 bytes, row-major HWC, RGB.
	Pixels []byte
	// Source is the input path relative to the build's SRC, '/'-separated.
	Source string
}

// RecordID, LabelIndices and RGB make a Record an input.Record, what
// batches are made of.
func (r *Record) RecordID() uint64 { return r.ID }

// LabelIndices returns the record's label indices.
func (r *Record) LabelIndices() []uint16 { return r.Labels }

// RGB returns the record's pixels, row-major HWC.
func (r *Record) RGB() []byte { return r.Pixels }

// Header is the fixed-size start of a shard file.
type Header struct {
	Width, Height, Channels int
	// Records is the number of records that follow the header.
	Records uint32
	// FirstID is the ID of the first record; record i has ID FirstID+i.
	FirstID uint64
}

// PixelBytes is the size of one record's pixel data.
func (h Header) PixelBytes() int { return h.Width * h.Height * h.Channels }

func (h Header) validate() error {
	if h.Channels != Channels {
		return corruptf(ErrCorrupt, "header: %d channels, want %d", h.Channels, Channels)
	}
	if h.Width < 1 || h.Width > MaxSide || h.Height < 1 || h.Height > MaxSide {
		return corruptf(ErrCorrupt, "header: geometry %dx%d outside 1..%d", h.Width, h.Height, MaxSide)
	}
	if h.FirstID > math.MaxUint64-uint64(h.Records) {
		return corruptf(ErrCorrupt, "header: record ids overflow (first %d, count %d)", h.FirstID, h.Records)
	}
	return nil
}

func appendHeader(b []byte, h Header) []byte {
	start := len(b)
	b = append(b, Magic...)
	b = binary.LittleEndian.AppendUint16(b, FormatVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.Channels))
	b = binary.LittleEndian.AppendUint32(b, uint32(h.Width))
	b = binary.LittleEndian.AppendUint32(b, uint32(h.Height))
	b = binary.LittleEndian.AppendUint32(b, h.Records)
	b = binary.LittleEndian.AppendUint64(b, h.FirstID)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// recordSize is the encoded size of a record, frame included.
func recordSize(nLabels, sourceLen, pixelBytes int) int {
	return recordFrame + recordFixed + 2*nLabels + sourceLen + pixelBytes
}

// appendRecord encodes rec. The caller guarantees the limits (sorted labels,
// source length, pixel size); the builder checks them before.
func appendRecord(b []byte, rec *Record) []byte {
	start := len(b)
	body := recordFixed + 2*len(rec.Labels) + len(rec.Source) + len(rec.Pixels)
	b = binary.LittleEndian.AppendUint32(b, uint32(body))
	b = binary.LittleEndian.AppendUint64(b, rec.ID)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(rec.Labels)))
	for _, l := range rec.Labels {
		b = binary.LittleEndian.AppendUint16(b, l)
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(rec.Source)))
	b = append(b, rec.Source...)
	b = append(b, rec.Pixels...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// Reader decodes a shard file record by record. It never trusts a length it
// has not bounded, so corrupt input yields an error, not a panic or a huge
// allocation.
type Reader struct {
	r    *bufio.Reader
	h    Header
	next uint32 // index of the next record
	off  int64  // bytes consumed, for error messages
	err  error  // sticky
}

// NewReader reads and checks the header of the shard in r.
func NewReader(r io.Reader) (*Reader, error) {
	sr := &Reader{r: bufio.NewReaderSize(r, 64<<10)}
	var buf [headerSize]byte
	n, err := io.ReadFull(sr.r, buf[:10])
	sr.off += int64(n)
	if err != nil {
		if n >= len(Magic) && string(buf[:len(Magic)]) != Magic {
			return nil, corruptf(ErrBadMagic, "header: magic %q", buf[:len(Magic)])
		}
		return nil, sr.eofErr(err, "header")
	}
	if string(buf[:len(Magic)]) != Magic {
		return nil, corruptf(ErrBadMagic, "header: magic %q", buf[:len(Magic)])
	}
	if v := binary.LittleEndian.Uint16(buf[8:]); v != FormatVersion {
		return nil, corruptf(ErrUnsupportedVersion, "header: version %d, this reader knows %d", v, FormatVersion)
	}
	n, err = io.ReadFull(sr.r, buf[10:])
	sr.off += int64(n)
	if err != nil {
		return nil, sr.eofErr(err, "header")
	}
	if got, want := crc32.Checksum(buf[:headerSize-4], castagnoli), binary.LittleEndian.Uint32(buf[headerSize-4:]); got != want {
		return nil, corruptf(ErrChecksum, "header: crc32c %08x, stored %08x", got, want)
	}
	sr.h = Header{
		Channels: int(binary.LittleEndian.Uint16(buf[10:])),
		Width:    int(binary.LittleEndian.Uint32(buf[12:])),
		Height:   int(binary.LittleEndian.Uint32(buf[16:])),
		Records:  binary.LittleEndian.Uint32(buf[20:]),
		FirstID:  binary.LittleEndian.Uint64(buf[24:]),
	}
	if err := sr.h.validate(); err != nil {
		return nil, err
	}
	return sr, nil
}

// Header returns the shard header.
func (r *Reader) Header() Header { return r.h }

// Next returns the next record, or io.EOF after the last one. It returns an
// error wrapping ErrCorrupt when the bytes are damaged, including when data
// follows the last record. The returned slices are not reused.
func (r *Reader) Next() (Record, error) {
	if r.err != nil {
		return Record{}, r.err
	}
	rec, err := r.next1()
	if err != nil {
		r.err = err
	}
	return rec, err
}

func (r *Reader) next1() (Record, error) {
	if r.next == r.h.Records {
		if _, err := r.r.Peek(1); err == nil {
			return Record{}, corruptf(ErrCorrupt, "offset %d: data after the last of %d records", r.off, r.h.Records)
		} else if !errors.Is(err, io.EOF) {
			return Record{}, err
		}
		return Record{}, io.EOF
	}
	start := r.off
	var lenb [4]byte
	n, err := io.ReadFull(r.r, lenb[:])
	r.off += int64(n)
	if err != nil {
		return Record{}, r.eofErr(err, "record %d at offset %d", r.next, start)
	}
	bodyLen := int(binary.LittleEndian.Uint32(lenb[:]))
	pix := r.h.PixelBytes()
	if bodyLen < recordFixed+pix || bodyLen > recordFixed+2*MaxLabels+MaxSourceLen+pix {
		return Record{}, corruptf(ErrCorrupt, "record %d at offset %d: body length %d impossible for %d pixel bytes", r.next, start, bodyLen, pix)
	}
	body, err := readFullGrow(r.r, bodyLen+4)
	r.off += int64(len(body))
	if err != nil {
		return Record{}, r.eofErr(err, "record %d at offset %d", r.next, start)
	}
	body, crcb := body[:bodyLen], body[bodyLen:]
	crc := crc32.Update(crc32.Checksum(lenb[:], castagnoli), castagnoli, body)
	if stored := binary.LittleEndian.Uint32(crcb); crc != stored {
		return Record{}, corruptf(ErrChecksum, "record %d at offset %d: crc32c %08x, stored %08x", r.next, start, crc, stored)
	}
	rec, err := parseBody(body, pix)
	if err != nil {
		return Record{}, corruptf(ErrCorrupt, "record %d at offset %d: %v", r.next, start, err)
	}
	if want := r.h.FirstID + uint64(r.next); rec.ID != want {
		return Record{}, corruptf(ErrCorrupt, "record %d at offset %d: id %d, want %d", r.next, start, rec.ID, want)
	}
	r.next++
	return rec, nil
}

// parseBody decodes a CRC-checked record body.
func parseBody(b []byte, pix int) (Record, error) {
	var rec Record
	rec.ID = binary.LittleEndian.Uint64(b)
	nl := int(binary.LittleEndian.Uint16(b[8:]))
	b = b[10:]
	if len(b) < 2*nl+2 {
		return rec, errors.New("label list overruns the record")
	}
	if nl > 0 {
		rec.Labels = make([]uint16, nl)
		for i := range rec.Labels {
			rec.Labels[i] = binary.LittleEndian.Uint16(b[2*i:])
			if i > 0 && rec.Labels[i] <= rec.Labels[i-1] {
				return rec, errors.New("labels not sorted and distinct")
			}
		}
	}
	b = b[2*nl:]
	sl := int(binary.LittleEndian.Uint16(b))
	b = b[2:]
	if sl > MaxSourceLen || len(b) != sl+pix {
		return rec, errors.New("source and pixel lengths do not add up to the record length")
	}
	if !utf8.Valid(b[:sl]) {
		return rec, errors.New("source path is not UTF-8")
	}
	rec.Source = string(b[:sl])
	rec.Pixels = b[sl:]
	return rec, nil
}

// eofErr turns an early EOF into ErrTruncated.
func (r *Reader) eofErr(err error, format string, args ...any) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		args = append(args, r.off)
		return corruptf(ErrTruncated, format+": data ends at offset %d", args...)
	}
	return err
}

// readFullGrow reads exactly n bytes, growing the buffer as data arrives so a
// lying length cannot force a large allocation up front.
func readFullGrow(r io.Reader, n int) ([]byte, error) {
	const chunk = 1 << 20
	if n <= chunk {
		b := make([]byte, n)
		k, err := io.ReadFull(r, b)
		return b[:k], err
	}
	b := make([]byte, 0, chunk)
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(cap(b), n-len(b)))
		}
		k, err := r.Read(b[len(b):min(cap(b), n)])
		b = b[:len(b)+k]
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) < n {
				return b, io.ErrUnexpectedEOF
			}
			if len(b) < n {
				return b, err
			}
		}
	}
	return b, nil
}
