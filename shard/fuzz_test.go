package shard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/color"
	"io"
	"slices"
	"testing"
)

// fuzzShard is the seed shard FuzzReadShard's manifest describes.
func fuzzShard(tb testing.TB) ([]byte, *Manifest, ShardInfo) {
	data, _ := testShard(tb, 3, 4)
	sum := sha256.Sum256(data)
	info := ShardInfo{Name: "shards/train-00000.shard", Records: 4, FirstID: 3, Bytes: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	m := &Manifest{Width: 2, Height: 2, Channels: 3, Labels: []string{"a", "b", "c", "d", "e"}}
	return data, m, info
}

func FuzzReadShard(f *testing.F) {
	good, m, info := fuzzShard(f)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:headerSize])
	f.Add(append(bytes.Clone(good), 0))
	flipped := bytes.Clone(good)
	flipped[headerSize+10] ^= 4
	f.Add(flipped)
	other, _ := testShard(f, 0, 1)
	f.Add(other)
	f.Add([]byte(Magic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Through the manifest checks: only the exact seed may pass.
		var recs []Record
		err := readShard(context.Background(), bytes.NewReader(data), info, m, func(r Record) error {
			recs = append(recs, r)
			return nil
		})
		if err == nil && !bytes.Equal(data, good) {
			t.Fatalf("readShard accepted %d bytes that differ from the manifest's shard", len(data))
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not match ErrCorrupt", err)
		}
		// The bare reader: whatever it accepts must re-encode to the same bytes.
		r, err := NewReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		out := appendHeader(nil, r.Header())
		for {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
			if len(rec.Pixels) != r.Header().PixelBytes() || !slices.IsSorted(rec.Labels) {
				t.Fatalf("record %+v breaks the header's geometry or label order", rec)
			}
			out = appendRecord(out, &rec)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("accepted shard re-encodes differently")
		}
	})
}

func FuzzManifest(f *testing.F) {
	data, err := validManifest().Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":"tailor-shards","version":1,"width":1e400}`))
	f.Add([]byte(`{"format":"tailor-shards","version":2}`))
	f.Add(data[:len(data)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			return
		}
		again, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a valid manifest: %v", err)
		}
		m2, err := DecodeManifest(again)
		if err != nil {
			t.Fatalf("re-decoding a valid manifest: %v", err)
		}
		third, _ := m2.Marshal()
		if !bytes.Equal(again, third) {
			t.Fatal("manifest encoding is not stable")
		}
	})
}

func FuzzDecodeImage(f *testing.F) {
	img := image.NewNRGBA(image.Rect(0, 0, 9, 7))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	f.Add(encodePNG(f, img))
	f.Add(encodeJPEG(f, img))
	f.Add(encodeGIF(f, img))
	f.Add(encodePNG(f, solid(4, 4, color.Gray{3})))
	f.Add(pngHeader(1<<20, 1<<20))
	f.Add([]byte("GIF89a"))
	f.Add([]byte{0xff, 0xd8, 0xff})
	for _, name := range []string{"orient-6.jpg", "cmyk.jpg", "ycck.jpg", "alpha.webp", "lossy.webp", "palette.bmp", "rgb16.png"} {
		f.Add(readPhoto(f, name))
	}
	f.Add(webpVP8X(16384, 16384))
	f.Add(bmpHeader(300, -300))
	lim := imageLimits{size: 4, minSide: 1, maxPixels: 1 << 16, interp: mustInterp(f), resize: ResizePad}
	f.Fuzz(func(t *testing.T, data []byte) {
		pix, reason, err := decodeImage(data, lim)
		if reason == "" && len(pix) != 4*4*3 {
			t.Fatalf("decoded %d bytes, want 48", len(pix))
		}
		if reason != "" && (pix != nil || (err == nil && reason != SkipEmptyFile)) {
			t.Fatalf("skip %q with pixels %v or no cause (%v)", reason, pix != nil, err)
		}
	})
}

func FuzzParseFolderLabels(f *testing.F) {
	for _, s := range []string{"female_blue_dress", "blue__dress", " a _b", "\x00", "é_\u200b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		labels, err := ParseFolderLabels(name)
		if err != nil {
			return
		}
		if len(labels) == 0 || !slices.IsSorted(labels) {
			t.Fatalf("labels %q empty or unsorted", labels)
		}
		for i, l := range labels {
			if ValidLabel(l) != nil || (i > 0 && labels[i-1] == l) {
				t.Fatalf("label %q invalid or repeated", l)
			}
		}
	})
}
