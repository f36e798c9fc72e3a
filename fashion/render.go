package fashion

import (
	"image"
	"math/rand/v2"
)

// Rendering uses integer arithmetic only, so the same composition gives the same
// bytes on every machine (floating point may be fused differently per target).

const (
	// alphaRamp is the source intensity at which a garment pixel becomes fully
	// opaque; below it the garment blends into the background (anti-aliased edges).
	alphaRamp = 40
	// alphaFloor is the intensity up to which a source pixel counts as background:
	// some Fashion-MNIST images have a faint non-zero box around the garment.
	alphaFloor = 8
	// Garment shading: a pixel of source intensity v gets the tint scaled by
	// (shadeMin + shadeSpan*v/255)/256, keeping the garment's texture while
	// every pixel stays close to its colour.
	// At 0.82 and above every Palette colour is still nearest to itself (each
	// stays so down to at least 0.80).
	shadeMin  = 210 // 0.82
	shadeSpan = 46  // up to 1.0
)

// render draws c. If owner is not nil (len Size*Size), it records for every
// pixel the index of the garment fully covering it, or -1 (background, or a
// blend of garment and what lies below).
func render(c *Composition, src *Set, owner []int8) *image.RGBA {
	n := c.Size
	img := image.NewRGBA(image.Rect(0, 0, n, n))
	drawBackground(img, &c.Background)
	for i := range owner {
		owner[i] = -1
	}
	for gi := range c.Garments {
		drawGarment(img, &c.Garments[gi], src, owner, int8(gi))
	}
	return img
}

func drawBackground(img *image.RGBA, b *Background) {
	n := img.Rect.Dx()
	var rng *rand.Rand
	if b.Kind == bgNoise {
		rng = rand.New(rand.NewPCG(b.Seed, 0))
	}
	umin := (n - 1) * (min(b.DX, 0) + min(b.DY, 0))
	span := max((n-1)*(abs(b.DX)+abs(b.DY)), 1)
	for y := range n {
		row := img.Pix[y*img.Stride:]
		for x := range n {
			d := 0
			switch b.Kind {
			case bgNoise:
				d = rng.IntN(2*b.Amp+1) - b.Amp
			case bgGradient:
				// u runs from umin to umin+span along the gradient direction.
				u := x*b.DX + y*b.DY - umin
				d = u*2*b.Amp/span - b.Amp
			}
			p := row[4*x : 4*x+4 : 4*x+4]
			p[0] = clamp8(int(b.Base[0]) + d)
			p[1] = clamp8(int(b.Base[1]) + d)
			p[2] = clamp8(int(b.Base[2]) + d)
			p[3] = 255
		}
	}
}

// drawGarment scales the source image into g.Rect with bilinear sampling and
// blends the tinted garment over img.
func drawGarment(img *image.RGBA, g *Garment, src *Set, owner []int8, index int8) {
	pix := src.Image(g.Source)
	rows, cols := src.Rows, src.Cols
	at := func(x, y int) int {
		if x < 0 || y < 0 || x >= cols || y >= rows {
			return 0
		}
		if g.FlipX {
			x = cols - 1 - x
		}
		return int(pix[y*cols+x])
	}
	w, h := g.Rect.Dx(), g.Rect.Dy()
	n := img.Rect.Dx()
	for ty := range h {
		py := g.Rect.Min.Y + ty
		if py < 0 || py >= n {
			continue
		}
		// Source coordinate of the pixel centre in 1/256 units.
		sy := floorDiv((2*ty+1)*rows*256, 2*h) - 128
		y0, fy := floorDiv(sy, 256), sy&255
		for tx := range w {
			px := g.Rect.Min.X + tx
			if px < 0 || px >= n {
				continue
			}
			sx := floorDiv((2*tx+1)*cols*256, 2*w) - 128
			x0, fx := floorDiv(sx, 256), sx&255
			top := at(x0, y0)*(256-fx) + at(x0+1, y0)*fx
			bot := at(x0, y0+1)*(256-fx) + at(x0+1, y0+1)*fx
			v := (top*(256-fy) + bot*fy + 1<<15) >> 16
			if v <= alphaFloor {
				continue
			}
			a := min((v-alphaFloor)*256/(alphaRamp-alphaFloor), 256)
			shade := shadeMin + v*shadeSpan/255
			p := img.Pix[py*img.Stride+4*px : py*img.Stride+4*px+3 : py*img.Stride+4*px+3]
			for ch, tint := range [3]uint8{g.Colour.R, g.Colour.G, g.Colour.B} {
				col := int(tint) * shade >> 8
				p[ch] = uint8((int(p[ch])*(256-a) + col*a + 128) >> 8)
			}
			if owner != nil {
				if a == 256 {
					owner[py*n+px] = index
				} else {
					owner[py*n+px] = -1
				}
			}
		}
	}
}

// floorDiv is a/b rounded towards minus infinity, for b > 0.
func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func clamp8(v int) uint8 {
	return uint8(min(max(v, 0), 255))
}
