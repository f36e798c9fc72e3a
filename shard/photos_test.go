package shard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The fixtures in testdata/photos are made by gen.py and ycck.c there.
func readPhoto(tb testing.TB, name string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "photos", name))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

type rgb [3]int

var (
	pRed   = rgb{255, 0, 0}
	pGreen = rgb{0, 255, 0}
	pBlue  = rgb{0, 0, 255}
	pBlack = rgb{0, 0, 0}
	pWhite = rgb{255, 255, 255}
)

// at returns the pixel (x, y) of size x size RGB bytes.
func at(pix []byte, size, x, y int) rgb {
	i := (y*size + x) * 3
	return rgb{int(pix[i]), int(pix[i+1]), int(pix[i+2])}
}

func nearRGB(a, b rgb, tol int) bool {
	for c := range 3 {
		if d := a[c] - b[c]; d > tol || d < -tol {
			return false
		}
	}
	return true
}

func photoLimits(tb testing.TB, size int, resize string) imageLimits {
	return imageLimits{size: size, minSide: 1, maxPixels: 1 << 20, interp: mustInterp(tb), resize: resize}
}

// The four 8x8 patches' centres of a 16x16 picture, left to right, top to bottom.
var patchCentres = [4][2]int{{4, 4}, {12, 4}, {4, 12}, {12, 12}}

func TestPhotoFormats(t *testing.T) {
	quad := [4]rgb{pRed, pGreen, pBlue, pBlack}
	alpha := [4]rgb{pRed, pWhite, {127, 127, 127}, pWhite} // over white: transparent blue, half-transparent black
	tests := []struct {
		file string
		want [4]rgb // at patchCentres
		tol  int
	}{
		{"cmyk.jpg", quad, 12}, // Adobe CMYK, inverted as Photoshop writes it
		{"ycck.jpg", quad, 12}, // Adobe YCCK (transform 2)
		{"gray.jpg", [4]rgb{{40, 40, 40}, {200, 200, 200}, {120, 120, 120}, {255, 255, 255}}, 6},
		{"alpha.png", alpha, 2}, // RGBA composited over white
		{"alpha.webp", alpha, 2},
		{"rgb16.png", [4]rgb{{255, 128, 0}, {255, 128, 0}, {255, 128, 0}, {255, 128, 0}}, 1},
		{"palette.png", quad, 0},
		{"anim.gif", [4]rgb{pRed, pRed, pRed, pRed}, 0}, // first frame red, second blue
		{"lossless.webp", quad, 0},
		{"lossy.webp", quad, 24}, // 4:2:0 chroma
		{"rgb24.bmp", quad, 0},
		{"palette.bmp", quad, 0},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			pix, reason, err := decodeImage(readPhoto(t, tt.file), photoLimits(t, 16, ResizeStretch))
			if reason != "" {
				t.Fatalf("decode: %s: %v", reason, err)
			}
			for i, c := range patchCentres {
				if got := at(pix, 16, c[0], c[1]); !nearRGB(got, tt.want[i], tt.tol) {
					t.Errorf("patch %d at %v: got %v, want %v ± %d", i, c, got, tt.want[i], tt.tol)
				}
			}
			// DecodeImage, which prediction uses, agrees with Build's decoder.
			opt, err := DecodeImage(readPhoto(t, tt.file), 16, InterpCatmullRom)
			if err != nil {
				t.Fatalf("DecodeImage: %v", err)
			}
			if !bytes.Equal(opt, pix) {
				t.Error("DecodeImage differs from decodeImage")
			}
		})
	}
}

// TestEXIFOrientation decodes the same upright 24x16 picture (red, green
// over blue, black quadrants) stored in each of the 8 EXIF orientations as
// JPEGs, and as a PNG (eXIf chunk) and a WebP (EXIF chunk).
func TestEXIFOrientation(t *testing.T) {
	files := map[string]int{"orient-6.png": 6, "orient-8.webp": 8}
	for o := 1; o <= 8; o++ {
		files[fmt.Sprintf("orient-%d.jpg", o)] = o
	}
	for name, o := range files {
		t.Run(name, func(t *testing.T) {
			data := readPhoto(t, name)
			format := strings.TrimPrefix(filepath.Ext(name), ".")
			if format == "jpg" {
				format = "jpeg"
			}
			if got := exifOrientation(format, data); got != o {
				t.Fatalf("exifOrientation = %d, want %d", got, o)
			}
			pix, reason, err := decodeImage(data, photoLimits(t, 16, ResizeStretch))
			if reason != "" {
				t.Fatalf("decode: %s: %v", reason, err)
			}
			for i, want := range []rgb{pRed, pGreen, pBlue, pBlack} {
				c := patchCentres[i]
				if got := at(pix, 16, c[0], c[1]); !nearRGB(got, want, 16) {
					t.Errorf("quadrant %d at %v: got %v, want %v", i, c, got, want)
				}
			}
			// Padded, the upright picture is wider than tall whatever
			// the orientation: white bands above and below, none beside.
			pix, reason, err = decodeImage(data, photoLimits(t, 12, ResizePad))
			if reason != "" {
				t.Fatalf("decode: %s: %v", reason, err)
			}
			for _, p := range [][2]int{{6, 0}, {6, 11}} {
				if got := at(pix, 12, p[0], p[1]); got != pWhite {
					t.Errorf("pad band at %v: got %v, want white", p, got)
				}
			}
			for _, p := range [][2]int{{0, 6}, {11, 6}} {
				if got := at(pix, 12, p[0], p[1]); nearRGB(got, pWhite, 40) {
					t.Errorf("picture edge at %v: got %v, want no band", p, got)
				}
			}
		})
	}
}

func TestResizeModes(t *testing.T) {
	// wide.png is 32x16: green, red, blue, green bands of 8 columns.
	data := readPhoto(t, "wide.png")
	tests := []struct {
		resize string
		rows   []int // rows checked
		want   []rgb // per column of the 8x8 output, on those rows
	}{
		{ResizeStretch, []int{0, 4, 7}, []rgb{pGreen, pGreen, pRed, pRed, pBlue, pBlue, pGreen, pGreen}},
		{ResizeCrop, []int{0, 4, 7}, []rgb{pRed, pRed, pRed, pRed, pBlue, pBlue, pBlue, pBlue}},
		{ResizePad, []int{2, 5}, []rgb{pGreen, pGreen, pRed, pRed, pBlue, pBlue, pGreen, pGreen}},
		{ResizePad, []int{0, 1, 6, 7}, slices.Repeat([]rgb{pWhite}, 8)},
	}
	for _, tt := range tests {
		pix, reason, err := decodeImage(data, photoLimits(t, 8, tt.resize))
		if reason != "" {
			t.Fatalf("%s: decode: %s: %v", tt.resize, reason, err)
		}
		for _, y := range tt.rows {
			for x, want := range tt.want {
				// Columns at a band's edge are blends; check the inner ones.
				if x > 0 && x < 7 && tt.want[x-1] != want && tt.want[x+1] != want {
					continue
				}
				if got := at(pix, 8, x, y); !nearRGB(got, want, 40) {
					t.Errorf("%s: pixel (%d,%d) = %v, want %v", tt.resize, x, y, got, want)
				}
			}
		}
	}
}

func TestResizeRects(t *testing.T) {
	tests := []struct {
		w, h     int
		mode     string
		from, to [4]int
	}{
		{32, 16, ResizeStretch, [4]int{0, 0, 32, 16}, [4]int{0, 0, 8, 8}},
		{32, 16, ResizeCrop, [4]int{8, 0, 24, 16}, [4]int{0, 0, 8, 8}},
		{16, 33, ResizeCrop, [4]int{0, 8, 16, 24}, [4]int{0, 0, 8, 8}},
		{32, 16, ResizePad, [4]int{0, 0, 32, 16}, [4]int{0, 2, 8, 6}},
		{16, 32, ResizePad, [4]int{0, 0, 16, 32}, [4]int{2, 0, 6, 8}},
		{1000, 1, ResizePad, [4]int{0, 0, 1000, 1}, [4]int{0, 3, 8, 4}}, // at least one row
		{10, 10, ResizePad, [4]int{0, 0, 10, 10}, [4]int{0, 0, 8, 8}},
	}
	for _, tt := range tests {
		b := image.Rect(0, 0, tt.w, tt.h)
		from, to := resizeRects(b, 8, tt.mode)
		if from != image.Rect(tt.from[0], tt.from[1], tt.from[2], tt.from[3]) || to != image.Rect(tt.to[0], tt.to[1], tt.to[2], tt.to[3]) {
			t.Errorf("%dx%d %s: from %v to %v, want %v %v", tt.w, tt.h, tt.mode, from, to, tt.from, tt.to)
		}
	}
}

func TestDecompressionBombs(t *testing.T) {
	tests := []struct {
		format string
		data   []byte
	}{
		{"png", pngHeader(100000, 100000)},
		{"jpeg", jpegHeader(60000, 60000)},
		{"gif", gifHeader(60000, 60000)},
		{"webp VP8X", webpVP8X(16384, 16384)},
		{"webp VP8L", webpVP8L(16384, 16384)},
		{"webp VP8", webpVP8(16383, 16383)},
		{"bmp", bmpHeader(60000, 60000)},
	}
	def := DefaultBuildConfig()
	lim := imageLimits{size: 8, minSide: 8, maxPixels: def.MaxSourcePixels, interp: mustInterp(t)}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			if len(tt.data) > 100 {
				t.Fatalf("bomb of %d bytes, want a small file", len(tt.data))
			}
			// The file holds a header only: decoding would fail as
			// corrupt, so too_large proves the header was checked first.
			_, reason, err := decodeImage(tt.data, lim)
			if reason != SkipTooLarge {
				t.Fatalf("reason %q (%v), want %q", reason, err, SkipTooLarge)
			}
			if err == nil || !strings.Contains(err.Error(), "pixels") {
				t.Errorf("cause %v, want the size and the limit", err)
			}
			_, err = DecodeImage(tt.data, 8, "")
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), SkipTooLarge) {
				t.Errorf("DecodeImage: %v, want ErrBadInput naming %s", err, SkipTooLarge)
			}
		})
	}
}

// jpegHeader is a JPEG with a baseline frame header claiming w x h and an
// empty scan.
func jpegHeader(w, h uint16) []byte {
	b := []byte{0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8}
	b = binary.BigEndian.AppendUint16(b, h)
	b = binary.BigEndian.AppendUint16(b, w)
	b = append(b, 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0)
	b = append(b, 0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 0, 3, 0, 0, 63, 0)
	return append(b, 0xFF, 0xD9)
}

func gifHeader(w, h uint16) []byte {
	b := []byte("GIF89a")
	b = binary.LittleEndian.AppendUint16(b, w)
	b = binary.LittleEndian.AppendUint16(b, h)
	return append(b, 0, 0, 0, ';')
}

func riffWebP(chunks ...[]byte) []byte {
	body := []byte("WEBP")
	for _, c := range chunks {
		body = append(body, c...)
	}
	b := binary.LittleEndian.AppendUint32([]byte("RIFF"), uint32(len(body)))
	return append(b, body...)
}

func webpChunk(fcc string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint32([]byte(fcc), uint32(len(data)))
	b = append(b, data...)
	if len(data)%2 == 1 {
		b = append(b, 0)
	}
	return b
}

func le24(b []byte, v uint32) []byte { return append(b, byte(v), byte(v>>8), byte(v>>16)) }

func webpVP8X(w, h uint32) []byte {
	d := []byte{0, 0, 0, 0}
	d = le24(d, w-1)
	d = le24(d, h-1)
	return riffWebP(webpChunk("VP8X", d))
}

func webpVP8L(w, h uint32) []byte {
	v := (w - 1) | (h-1)<<14 // no alpha, version 0
	d := binary.LittleEndian.AppendUint32([]byte{0x2f}, v)
	return riffWebP(webpChunk("VP8L", d))
}

func webpVP8(w, h uint16) []byte {
	d := []byte{0x10, 0, 0, 0x9d, 0x01, 0x2a} // key frame, shown, start code
	d = binary.LittleEndian.AppendUint16(d, w)
	d = binary.LittleEndian.AppendUint16(d, h)
	return riffWebP(webpChunk("VP8 ", d))
}

func bmpHeader(w, h int32) []byte {
	b := []byte("BM")
	b = binary.LittleEndian.AppendUint32(b, 54)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 54)
	b = binary.LittleEndian.AppendUint32(b, 40)
	b = binary.LittleEndian.AppendUint32(b, uint32(w))
	b = binary.LittleEndian.AppendUint32(b, uint32(h))
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, 24)
	return append(b, make([]byte, 24)...)
}

// TestBuildPhotos ingests every photo fixture from a label folder with
// --resize pad: all are records, none skipped, and the manifest records pad.
func TestBuildPhotos(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "photos"))
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	n := 0
	for _, e := range entries {
		if !imageExts[strings.ToLower(filepath.Ext(e.Name()))] || e.Name() == "anim.webp" {
			continue
		}
		writeFile(t, src, "red_photo/"+e.Name(), readPhoto(t, e.Name()))
		n++
	}
	if n < 20 {
		t.Fatalf("%d fixtures, want every format", n)
	}
	cfg := testConfig(t)
	cfg.ValFraction = 0
	cfg.Resize = ResizePad
	st := newStore(t)
	m := build(t, cfg, src, st)
	if m.Build.Resize != ResizePad {
		t.Errorf("manifest resize %q, want pad", m.Build.Resize)
	}
	if got := m.Splits[0].Records; got != int64(n) || len(m.Splits[0].Skipped) != 0 {
		t.Errorf("%d records, skipped %v; want %d and none", got, m.Splits[0].Skipped, n)
	}
	recs := bySource(t, st, m, SplitTrain)
	wide := recs["red_photo/wide.png"]
	if len(wide.Pixels) != 8*8*3 {
		t.Fatalf("wide.png: %d bytes", len(wide.Pixels))
	}
	if top, mid := at(wide.Pixels, 8, 4, 0), at(wide.Pixels, 8, 0, 4); top != pWhite || !nearRGB(mid, pGreen, 40) {
		t.Errorf("wide.png padded: top %v (want white), left middle %v (want green)", top, mid)
	}
}

// Animated WebP is not decoded: it is skipped as corrupt, with a cause.
func TestAnimatedWebPIsSkipped(t *testing.T) {
	_, reason, err := decodeImage(readPhoto(t, "anim.webp"), photoLimits(t, 8, ResizeStretch))
	if reason != SkipCorrupt || err == nil {
		t.Errorf("reason %q (%v), want %q with a cause", reason, err, SkipCorrupt)
	}
}
