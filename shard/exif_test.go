package shard

import (
	"encoding/binary"
	"fmt"
	"testing"
)

type ifdEntry struct {
	tag, typ uint16
	count    uint32
	value    uint32 // a SHORT goes in the first two bytes, in the file's byte order
}

// tiffBytes is a TIFF header and an IFD0 holding entries.
type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

func tiffBytes(bo byteOrder, entries ...ifdEntry) []byte {
	b := []byte("II")
	if bo.String() == binary.BigEndian.String() {
		b = []byte("MM")
	}
	b = bo.AppendUint16(b, 42)
	b = bo.AppendUint32(b, 8)
	b = bo.AppendUint16(b, uint16(len(entries)))
	for _, e := range entries {
		b = bo.AppendUint16(b, e.tag)
		b = bo.AppendUint16(b, e.typ)
		b = bo.AppendUint32(b, e.count)
		if e.typ == 3 {
			b = bo.AppendUint16(b, uint16(e.value))
			b = bo.AppendUint16(b, 0)
		} else {
			b = bo.AppendUint32(b, e.value)
		}
	}
	return bo.AppendUint32(b, 0) // no next IFD
}

func segment(marker byte, body []byte) []byte {
	b := []byte{0xFF, marker}
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)+2))
	return append(b, body...)
}

func exifSegment(tiff []byte) []byte {
	return segment(0xE1, append([]byte("Exif\x00\x00"), tiff...))
}

// jpegWith is a JPEG's start, the given segments, and a start of scan.
func jpegWith(segments ...[]byte) []byte {
	b := []byte{0xFF, 0xD8}
	for _, s := range segments {
		b = append(b, s...)
	}
	return append(b, 0xFF, 0xDA, 0, 2, 1, 2, 3, 0xFF, 0xD9)
}

func orientationEntry(v uint32) ifdEntry { return ifdEntry{tagOrientation, 3, 1, v} }

func TestJPEGOrientation(t *testing.T) {
	le, be := binary.LittleEndian, binary.BigEndian
	jfif := segment(0xE0, []byte("JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"))
	xmp := segment(0xE1, []byte("http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>"))
	badOffset := tiffBytes(le, orientationEntry(6))
	binary.LittleEndian.PutUint32(badOffset[4:], 0xFFFFFFFF)
	manyEntries := tiffBytes(be, orientationEntry(6))[:10]
	binary.BigEndian.PutUint16(manyEntries[8:], 0xFFFF)
	tests := []struct {
		name string
		data []byte
		want int
	}{
		{"little-endian 6", jpegWith(exifSegment(tiffBytes(le, orientationEntry(6)))), 6},
		{"big-endian 8", jpegWith(exifSegment(tiffBytes(be, orientationEntry(8)))), 8},
		{"second entry", jpegWith(exifSegment(tiffBytes(le, ifdEntry{0x010F, 2, 4, 0}, orientationEntry(3)))), 3},
		{"after JFIF and XMP", jpegWith(jfif, xmp, exifSegment(tiffBytes(be, orientationEntry(5)))), 5},
		{"fill bytes", append([]byte{0xFF, 0xD8, 0xFF, 0xFF}, jpegWith(exifSegment(tiffBytes(le, orientationEntry(7))))[3:]...), 7},
		{"no EXIF", jpegWith(jfif), 1},
		{"no orientation tag", jpegWith(exifSegment(tiffBytes(le, ifdEntry{0x010F, 2, 4, 0}))), 1},
		{"EXIF after the scan", append(jpegWith(jfif), exifSegment(tiffBytes(le, orientationEntry(6)))...), 1},
		{"orientation 0", jpegWith(exifSegment(tiffBytes(le, orientationEntry(0)))), 1},
		{"orientation 9", jpegWith(exifSegment(tiffBytes(le, orientationEntry(9)))), 1},
		{"orientation as LONG", jpegWith(exifSegment(tiffBytes(le, ifdEntry{tagOrientation, 4, 1, 6}))), 1},
		{"two values", jpegWith(exifSegment(tiffBytes(le, ifdEntry{tagOrientation, 3, 2, 6}))), 1},
		{"IFD offset past the end", jpegWith(exifSegment(badOffset)), 1},
		{"entries past the end", jpegWith(exifSegment(manyEntries)), 1},
		{"bad byte order", jpegWith(exifSegment(append([]byte("XX"), tiffBytes(le, orientationEntry(6))[2:]...))), 1},
		{"bad magic", jpegWith(exifSegment(append([]byte("II\x2b\x00"), tiffBytes(le, orientationEntry(6))[4:]...))), 1},
		{"truncated TIFF", jpegWith(exifSegment([]byte("II*"))), 1},
		{"segment past the end", []byte{0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, 'E', 'x'}, 1},
		{"segment length 1", []byte{0xFF, 0xD8, 0xFF, 0xE1, 0, 1, 0, 0}, 1},
		{"no marker", []byte{0xFF, 0xD8, 0x00, 0xE1, 0, 2, 0, 0}, 1},
		{"PNG", pngHeader(8, 8), 1},
		{"empty", nil, 1},
	}
	for _, tt := range tests {
		if got := jpegOrientation(tt.data); got != tt.want {
			t.Errorf("%s: orientation %d, want %d", tt.name, got, tt.want)
		}
	}
}

// pngWith is a PNG signature and the given chunks (CRCs not checked by the
// reader, so zero).
func pngWith(chunks ...[]byte) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	for _, c := range chunks {
		b = append(b, c...)
	}
	return b
}

func pngChunk(typ string, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	b = append(append(b, typ...), data...)
	return append(b, 0, 0, 0, 0)
}

func TestPNGAndWebPOrientation(t *testing.T) {
	le, be := binary.LittleEndian, binary.BigEndian
	ihdr := pngChunk("IHDR", make([]byte, 13))
	tests := []struct {
		name, format string
		data         []byte
		want         int
	}{
		{"png eXIf", "png", pngWith(ihdr, pngChunk("eXIf", tiffBytes(be, orientationEntry(6))), pngChunk("IEND", nil)), 6},
		{"png eXIf after IDAT", "png", pngWith(ihdr, pngChunk("IDAT", []byte{1, 2, 3}), pngChunk("eXIf", tiffBytes(le, orientationEntry(3)))), 3},
		{"png eXIf after IEND", "png", pngWith(ihdr, pngChunk("IEND", nil), pngChunk("eXIf", tiffBytes(le, orientationEntry(3)))), 1},
		{"png no eXIf", "png", pngWith(ihdr, pngChunk("IEND", nil)), 1},
		{"png chunk past the end", "png", pngWith([]byte{0x7F, 0xFF, 0xFF, 0xFF, 'e', 'X', 'I', 'f'}), 1},
		{"webp EXIF", "webp", riffWebP(webpChunk("VP8L", []byte{0x2f, 0, 0, 0, 0}), webpChunk("EXIF", tiffBytes(le, orientationEntry(8)))), 8},
		{"webp EXIF with Exif header", "webp", riffWebP(webpChunk("EXIF", append([]byte("Exif\x00\x00"), tiffBytes(be, orientationEntry(5))...))), 5},
		{"webp odd chunk padded", "webp", riffWebP(webpChunk("ICCP", []byte{1, 2, 3}), webpChunk("EXIF", tiffBytes(le, orientationEntry(7)))), 7},
		{"webp no EXIF", "webp", webpVP8L(8, 8), 1},
		{"webp chunk past the end", "webp", append([]byte("RIFF\x00\x00\x00\x00WEBPEXIF"), 0xFF, 0xFF, 0xFF, 0x7F), 1},
		{"gif", "gif", gifHeader(8, 8), 1},
		{"png named jpeg", "jpeg", pngWith(pngChunk("eXIf", tiffBytes(be, orientationEntry(6)))), 1},
	}
	for _, tt := range tests {
		if got := exifOrientation(tt.format, tt.data); got != tt.want {
			t.Errorf("%s: orientation %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestOrientSquare(t *testing.T) {
	// A 2x2 RGBA square with pixels 1, 2 over 3, 4 (in R), turned upright.
	src := []byte{1, 0, 0, 255, 2, 0, 0, 255, 3, 0, 0, 255, 4, 0, 0, 255}
	want := map[int][4]byte{
		1: {1, 2, 3, 4},
		2: {2, 1, 4, 3},
		3: {4, 3, 2, 1},
		4: {3, 4, 1, 2},
		5: {1, 3, 2, 4},
		6: {3, 1, 4, 2}, // turned clockwise: the left column becomes the top row
		7: {4, 2, 3, 1},
		8: {2, 4, 1, 3},
	}
	for o := 1; o <= 8; o++ {
		out := orientSquare(src, 2, o)
		got := [4]byte{out[0], out[3], out[6], out[9]}
		if got != want[o] {
			t.Errorf("orientation %d: %v, want %v", o, got, want[o])
		}
	}
}

// FuzzEXIFOrientation checks that the EXIF readers never panic, always
// answer 1 to 8, and read a TIFF structure the same bare or in a JPEG, a
// PNG or a WebP.
func FuzzEXIFOrientation(f *testing.F) {
	for o := 1; o <= 8; o++ {
		f.Add(readPhoto(f, fmt.Sprintf("orient-%d.jpg", o)))
	}
	f.Add(readPhoto(f, "orient-6.png"))
	f.Add(readPhoto(f, "orient-8.webp"))
	f.Add(tiffBytes(binary.BigEndian, ifdEntry{0x010F, 2, 4, 0}, orientationEntry(6)))
	f.Add(tiffBytes(binary.LittleEndian, orientationEntry(3)))
	f.Add(jpegWith(exifSegment(tiffBytes(binary.BigEndian, orientationEntry(8)))))
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []string{"jpeg", "png", "webp"} {
			if o := exifOrientation(format, data); o < 1 || o > 8 {
				t.Fatalf("exifOrientation(%s) = %d", format, o)
			}
		}
		v, err := tiffOrientation(data)
		if err != nil {
			return
		}
		if v < 1 || v > 8 {
			t.Fatalf("tiffOrientation = %d without an error", v)
		}
		if len(data) <= 0xFFFF-2-6 {
			if o := jpegOrientation(jpegWith(exifSegment(data))); o != v {
				t.Fatalf("in a JPEG: %d, bare: %d", o, v)
			}
		}
		if o := exifOrientation("png", pngWith(pngChunk("eXIf", data))); o != v {
			t.Fatalf("in a PNG: %d, bare: %d", o, v)
		}
		if o := exifOrientation("webp", riffWebP(webpChunk("EXIF", data))); o != v {
			t.Fatalf("in a WebP: %d, bare: %d", o, v)
		}
	})
}
