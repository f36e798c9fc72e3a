package fashion

import (
	"image"
	"math/rand/v2"
	"slices"
	"strings"
)

// Output splits, in generation order.
const (
	SplitTrain = "train"
	SplitVal   = "val"
	SplitTest  = "test"
)

var splitNames = [...]string{SplitTrain, SplitVal, SplitTest}

// valEvery holds out every valEvery-th Fashion-MNIST train image (index%valEvery ==
// valEvery-1) as the pool that val garments come from; the others feed train.
// The split does not depend on the seed, so val never shares a source image with
// train, whatever the seed. 1 in 6 gives 50000/10000, the size of t10k.
const valEvery = 6

// pools are the source image indices each output split draws garments from.
type pools struct {
	train []int // into the Fashion-MNIST train set
	val   []int // into the Fashion-MNIST train set, disjoint from train
	test  []int // into t10k
}

func makePools(nTrain, nTest int) pools {
	var p pools
	for i := range nTrain {
		if i%valEvery == valEvery-1 {
			p.val = append(p.val, i)
		} else {
			p.train = append(p.train, i)
		}
	}
	p.test = make([]int, nTest)
	for i := range p.test {
		p.test[i] = i
	}
	return p
}

// pool returns the source set name and indices for an output split.
func (p pools) pool(split string) (string, []int) {
	switch split {
	case SplitTrain:
		return "train", p.train
	case SplitVal:
		return "train", p.val
	default:
		return "t10k", p.test
	}
}

// Garment is one placed garment: which source image, where, in which colour.
type Garment struct {
	Class  int    // Fashion-MNIST class, index into ClassNames
	Source int    // index of the source image in the source set
	Colour Colour // tint
	// Rect is where the source image is drawn, scaled to its size. It may reach a
	// little outside the garment's grid cell but never outside the image.
	Rect  image.Rectangle
	FlipX bool
}

// Background kinds.
const (
	bgPlain = iota
	bgNoise
	bgGradient
	numBackgrounds
)

// Background is a near-neutral grey, plain or lightly textured, dark enough for
// white and light enough for black garments to stand out.
type Background struct {
	Kind   int      // bgPlain, bgNoise or bgGradient
	Base   [3]uint8 // RGB
	Amp    int      // texture amplitude, grey levels
	DX, DY int      // gradient direction, each in -1..1, not both 0
	Seed   uint64   // noise seed
}

// Composition is everything about one generated image: a pure function of the
// config, the seed, the split and the image id. Rendering it needs only the
// source set.
type Composition struct {
	Split      string // SplitTrain, SplitVal or SplitTest
	ID         int
	Set        string // source set: "train" or "t10k"
	Size       int
	Single     bool // LayoutSingle: folder named colour_garment
	Garments   []Garment
	Background Background
}

// Labels returns the sorted, de-duplicated label set: garment class names and
// colour names.
func (c *Composition) Labels() []string {
	var ls []string
	for _, g := range c.Garments {
		ls = append(ls, ClassNames[g.Class], g.Colour.Name)
	}
	slices.Sort(ls)
	return slices.Compact(ls)
}

// Dir returns the folder name for the image: the labels joined by '_', sorted; in
// the single layout colour first, then garment (blue_dress), as in the tutorial.
func (c *Composition) Dir() string {
	if c.Single && len(c.Garments) == 1 {
		g := c.Garments[0]
		return g.Colour.Name + "_" + ClassNames[g.Class]
	}
	return strings.Join(c.Labels(), "_")
}

// FileName returns the image's file name, the six-digit id plus ".png".
func (c *Composition) FileName() string {
	return id6(c.ID) + ".png"
}

func id6(id int) string {
	const digits = "0123456789"
	var b [6]byte
	for i := 5; i >= 0; i-- {
		b[i] = digits[id%10]
		id /= 10
	}
	return string(b[:])
}

// imageRNG is the random source of one image: seeded from the run seed and the
// image's position, so images can be made in any order, in parallel.
func imageRNG(seed uint64, split string, id int) *rand.Rand {
	s := uint64(slices.Index(splitNames[:], split) + 1)
	return rand.New(rand.NewPCG(splitmix64(seed^0x7461696c6f72), splitmix64(s<<32|uint64(id))))
}

// splitmix64 is a bijective 64-bit mixer (Steele et al., SplitMix).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// grid is a rows x cols arrangement of garment cells.
type grid struct{ rows, cols int }

// gridFor returns the grid used for k garments (for k = 2, the orientation is
// chosen per image; this is the 1x2 one).
func gridFor(k int) grid {
	switch {
	case k <= 1:
		return grid{1, 1}
	case k == 2:
		return grid{1, 2}
	case k <= 4:
		return grid{2, 2}
	case k <= 6:
		return grid{2, 3}
	default:
		return grid{3, 3}
	}
}

// compose decides the content of image id of split: how many garments, which
// source images, colours, positions and background. set is the source set the
// split draws from (its labels give the classes) and pool the indices allowed.
func compose(cfg *Config, colours []Colour, set *Set, pool []int, split string, id int) Composition {
	rng := imageRNG(cfg.Seed, split, id)
	c := Composition{Split: split, ID: id, Set: set.Name, Size: cfg.Size, Single: cfg.Layout == LayoutSingle}

	k := 1
	if !c.Single {
		k = cfg.MinGarments + rng.IntN(cfg.MaxGarments-cfg.MinGarments+1)
	}
	g := gridFor(k)
	if k == 2 && rng.IntN(2) == 0 {
		g = grid{2, 1}
	}
	cells := rng.Perm(g.rows * g.cols)[:k]
	slices.Sort(cells) // draw in reading order

	size := cfg.Size
	for _, cell := range cells {
		r, col := cell/g.cols, cell%g.cols
		cell := image.Rect(col*size/g.cols, r*size/g.rows, (col+1)*size/g.cols, (r+1)*size/g.rows)
		src := pool[rng.IntN(len(pool))]
		gm := Garment{
			Class:  int(set.Labels[src]),
			Source: src,
			Colour: colours[rng.IntN(len(colours))],
			FlipX:  rng.IntN(2) == 0,
		}
		gm.Rect = placeIn(rng, cell, size)
		c.Garments = append(c.Garments, gm)
	}
	c.Background = background(rng)
	return c
}

// placeIn picks a garment rectangle for a cell: a square of 75-100% of the
// cell's shorter side, stretched by up to ±8% vertically, at a random position
// that may spill a tenth of the garment's size out of the cell (light overlap at
// most), clipped to the image by moving, not shrinking.
func placeIn(rng *rand.Rand, cell image.Rectangle, size int) image.Rectangle {
	side := min(cell.Dx(), cell.Dy())
	w := side * (75 + rng.IntN(26)) / 100
	h := w * (92 + rng.IntN(17)) / 100
	w, h = max(w, 4), min(max(h, 4), cell.Dy()+side/10, size)
	spill := w / 10
	x := cell.Min.X - spill + rng.IntN(cell.Dx()-w+2*spill+1)
	spill = h / 10
	y := cell.Min.Y - spill + rng.IntN(max(cell.Dy()-h+2*spill+1, 1))
	x = min(max(x, 0), size-w)
	y = min(max(y, 0), size-h)
	return image.Rect(x, y, x+w, y+h)
}

func background(rng *rand.Rand) Background {
	base := 105 + rng.IntN(36)
	b := Background{Kind: rng.IntN(numBackgrounds), Seed: rng.Uint64()}
	for i := range b.Base {
		b.Base[i] = uint8(base - 4 + rng.IntN(9)) // a faint tint, never a colour
	}
	switch b.Kind {
	case bgNoise:
		b.Amp = 4 + rng.IntN(7)
	case bgGradient:
		b.Amp = 6 + rng.IntN(9)
		for b.DX == 0 && b.DY == 0 {
			b.DX, b.DY = rng.IntN(3)-1, rng.IntN(3)-1
		}
	}
	return b
}
