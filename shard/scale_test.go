package shard

import (
	"image"
	"image/color"
	"math/rand/v2"
	"testing"

	"golang.org/x/image/draw"
)

// scale copies an image already at the target size; the copy must be the
// very bytes each interpolator's resampling gives at scale 1, for every
// kind of image the decoders return, so shards built before and after the
// shortcut hold the same pixels.
func TestScaleOneToOneCopies(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n = 24
	rect := image.Rect(0, 0, n, n)
	rgba := image.NewRGBA(rect)
	for i := range rgba.Pix {
		rgba.Pix[i] = byte(r.IntN(256))
		if i%4 == 3 {
			rgba.Pix[i] = 255
		}
	}
	ycc := image.NewYCbCr(rect, image.YCbCrSubsampleRatio420)
	for i := range ycc.Y {
		ycc.Y[i] = byte(r.IntN(256))
	}
	for i := range ycc.Cb {
		ycc.Cb[i], ycc.Cr[i] = byte(r.IntN(256)), byte(r.IntN(256))
	}
	gray := image.NewGray(rect)
	for i := range gray.Pix {
		gray.Pix[i] = byte(r.IntN(256))
	}
	deep := image.NewRGBA64(rect)
	for y := range n {
		for x := range n {
			deep.Set(x, y, color.RGBA64{uint16(r.IntN(65536)), uint16(r.IntN(65536)), uint16(r.IntN(65536)), 65535})
		}
	}
	pal := image.NewPaletted(rect, color.Palette{color.RGBA{200, 10, 10, 255}, color.RGBA{0, 90, 250, 255}, color.Black})
	for i := range pal.Pix {
		pal.Pix[i] = uint8(r.IntN(3))
	}
	for _, name := range []string{InterpCatmullRom, InterpBilinear} {
		interp, err := interpolator(name)
		if err != nil {
			t.Fatal(err)
		}
		for kind, src := range map[string]image.Image{"RGBA": rgba, "YCbCr 4:2:0": ycc, "Gray": gray, "RGBA64": deep, "Paletted": pal} {
			want, got := image.NewRGBA(rect), image.NewRGBA(rect)
			interp.Scale(want, rect, src, rect, draw.Src, nil)
			scale(interp, got, rect, src, rect)
			for i := range want.Pix {
				if got.Pix[i] != want.Pix[i] {
					t.Errorf("%s, %s: byte %d is %d, resampling gives %d", name, kind, i, got.Pix[i], want.Pix[i])
					break
				}
			}
		}
	}
}
