package shard

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"slices"
	"testing"

	"github.com/tailorml/tailor/store"
)

// testShard encodes a shard of n records of a 2x2 geometry.
func testShard(tb testing.TB, firstID uint64, n int) ([]byte, []Record) {
	tb.Helper()
	h := Header{Width: 2, Height: 2, Channels: 3, Records: uint32(n), FirstID: firstID}
	b := appendHeader(nil, h)
	var recs []Record
	for i := range n {
		r := Record{
			ID:     firstID + uint64(i),
			Labels: []uint16{uint16(i), uint16(i + 2)}[:i%3],
			Pixels: bytes.Repeat([]byte{byte(i)}, h.PixelBytes()),
			Source: "blue_dress/" + string(rune('a'+i)) + ".jpg",
		}
		if len(r.Labels) == 0 {
			r.Labels = nil
		}
		recs = append(recs, r)
		b = appendRecord(b, &r)
	}
	return b, recs
}

// readAll decodes a whole shard with NewReader.
func readAll(data []byte) ([]Record, error) {
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	var recs []Record
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return recs, err
		}
		recs = append(recs, rec)
	}
}

func TestShardRoundTrip(t *testing.T) {
	data, want := testShard(t, 40, 5)
	got, err := readAll(data)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || !slices.Equal(g.Labels, w.Labels) || !bytes.Equal(g.Pixels, w.Pixels) || g.Source != w.Source {
			t.Errorf("record %d = %+v, want %+v", i, g, w)
		}
	}
	if len(data) != headerSize+5*recordSize(0, len("blue_dress/a.jpg"), 12)+2*(0+1+2+0+1) {
		t.Errorf("encoded size %d does not match recordSize", len(data))
	}
}

func TestShardCorruption(t *testing.T) {
	good, _ := testShard(t, 0, 3)
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"short magic", []byte("TLR"), ErrTruncated},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), ErrBadMagic},
		{"not a shard", []byte("\x89PNG\r\n\x1a\n...."), ErrBadMagic},
		{"version 2", mutate(func(b []byte) []byte { b[8] = 2; return b }), ErrUnsupportedVersion},
		{"header flip", mutate(func(b []byte) []byte { b[12] ^= 1; return b }), ErrChecksum},
		{"header cut", good[:headerSize-1], ErrTruncated},
		{"pixel flip", mutate(func(b []byte) []byte { b[len(b)-5] ^= 0x10; return b }), ErrChecksum},
		{"crc flip", mutate(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), ErrChecksum},
		{"cut mid record", good[:len(good)-3], ErrTruncated},
		{"cut at record boundary", good[:headerSize+recordSize(0, len("blue_dress/a.jpg"), 12)], ErrTruncated},
		{"trailing data", append(bytes.Clone(good), 0), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readAll(tt.data)
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrCorrupt) || !errors.Is(err, store.ErrCorrupt) {
				t.Errorf("error = %v, want %v (and ErrCorrupt, store.ErrCorrupt)", err, tt.want)
			}
			if store.Transient(err) {
				t.Errorf("store.Transient(%v) = true, want damaged bytes permanent", err)
			}
		})
	}
}

// Every single flipped bit and every truncation must be caught.
func TestShardEveryFlipAndCutDetected(t *testing.T) {
	good, _ := testShard(t, 7, 3)
	for i := range good {
		for bit := range 8 {
			b := bytes.Clone(good)
			b[i] ^= 1 << bit
			if _, err := readAll(b); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip of byte %d bit %d: error = %v, want ErrCorrupt", i, bit, err)
			}
		}
	}
	for n := range len(good) {
		if _, err := readAll(good[:n]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d of %d: error = %v, want ErrTruncated", n, len(good), err)
		}
	}
}

// Records with a valid CRC but inconsistent contents are still rejected.
func TestShardBadRecordContents(t *testing.T) {
	h := Header{Width: 2, Height: 2, Channels: 3, Records: 1, FirstID: 5}
	px := make([]byte, 12)
	tests := []struct {
		name string
		rec  Record
	}{
		{"unsorted labels", Record{ID: 5, Labels: []uint16{3, 1}, Pixels: px}},
		{"repeated label", Record{ID: 5, Labels: []uint16{2, 2}, Pixels: px}},
		{"wrong id", Record{ID: 6, Pixels: px}},
		{"short pixels", Record{ID: 5, Pixels: px[:11]}},
		{"source not utf-8", Record{ID: 5, Pixels: px, Source: "\xff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := appendRecord(appendHeader(nil, h), &tt.rec)
			if _, err := readAll(data); !errors.Is(err, ErrCorrupt) {
				t.Errorf("error = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestHeaderGeometryLimits(t *testing.T) {
	for _, h := range []Header{
		{Width: 0, Height: 2, Channels: 3},
		{Width: 2, Height: MaxSide + 1, Channels: 3},
		{Width: 2, Height: 2, Channels: 4},
		{Width: 2, Height: 2, Channels: 3, Records: 2, FirstID: 1<<64 - 1},
	} {
		if _, err := NewReader(bytes.NewReader(appendHeader(nil, h))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("header %+v: error = %v, want ErrCorrupt", h, err)
		}
	}
}

// A lying record length must not make the reader allocate it up front.
func TestHugeLengthIsNotAllocated(t *testing.T) {
	h := Header{Width: MaxSide, Height: MaxSide, Channels: 3, Records: 1}
	data := appendHeader(nil, h)
	data = append(data, 12, 0, 0, 3) // body length 12+48 MiB, then nothing
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := readAll(data); !errors.Is(err, ErrTruncated) {
		t.Fatalf("error = %v, want ErrTruncated", err)
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
		t.Errorf("reading a 40-byte shard allocated %d bytes", n)
	}
}
