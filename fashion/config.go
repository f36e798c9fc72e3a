// Package fashion composes multi-label clothing images from Fashion-MNIST: each
// image holds one or more garments, each tinted in a named colour, and is labelled
// with the garment types and colours it contains. It writes an ordinary folder
// tree (or flat images plus a CSV) that tailor's ingest reads.
package fashion

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// DefaultSource is where Debian's dataset-fashion-mnist package installs the data.
const DefaultSource = "/usr/share/datasets/fashion-mnist"

// Layouts.
const (
	// LayoutMulti places MinGarments..MaxGarments garments per image, each in its
	// own colour; labels are the garment types and colours present.
	LayoutMulti = "multi"
	// LayoutSingle is the original tutorial's setting: one garment in one colour,
	// written to a folder named colour_garment (e.g. blue_dress).
	LayoutSingle = "single"
)

// Output formats.
const (
	// FormatFolders writes OUT/<split>/<labels joined by '_'>/<id>.png.
	FormatFolders = "folders"
	// FormatCSV writes OUT/<split>/images/<id>.png and OUT/<split>/labels.csv with
	// the header "path,labels"; labels are separated by single spaces and path is
	// relative to the CSV file.
	FormatCSV = "csv"
)

// Limits checked by Validate.
const (
	MinSize      = 16
	MaxSize      = 1024
	MaxGarments  = 9
	MaxPerSplit  = 999999 // ids are six digits
	NumClasses   = 10
	minCellPixel = 8 // smallest garment a size/garment count may produce
)

// ClassNames are the label names of the Fashion-MNIST classes 0..9: no '_' and no
// spaces, so they can be joined into folder names.
var ClassNames = [NumClasses]string{
	"tshirt", "trouser", "pullover", "dress", "coat",
	"sandal", "shirt", "sneaker", "bag", "boot",
}

// Colour is a named tint.
type Colour struct {
	Name    string
	R, G, B uint8
}

// Palette lists the colours that Config.Colours may name. They are saturated or
// extreme enough to stay distinguishable from each other and from the mid-grey
// background, also at the darker end of the garment shading.
var Palette = []Colour{
	{"black", 20, 20, 20},
	{"blue", 30, 70, 225},
	{"green", 30, 170, 50},
	{"red", 220, 30, 30},
	{"white", 245, 245, 245},
	{"yellow", 245, 220, 30},
	{"orange", 250, 130, 20},
	{"purple", 140, 40, 175},
	{"pink", 250, 125, 195},
	{"brown", 125, 75, 35},
	{"cyan", 30, 205, 215},
}

// DefaultColours are the six colours used unless Config.Colours says otherwise.
var DefaultColours = []string{"black", "blue", "green", "red", "white", "yellow"}

// Config says what Generate writes.
type Config struct {
	Source string // folder with the Fashion-MNIST IDX files (.gz or raw)
	Out    string // output folder

	Size             int // width and height of the square RGB images, pixels
	Train, Val, Test int // images per split; train and val come from Fashion-MNIST train, test from t10k

	MinGarments, MaxGarments int    // garments per image (LayoutMulti only)
	Layout                   string // LayoutMulti or LayoutSingle
	Format                   string // FormatFolders or FormatCSV

	Seed    uint64   // same seed, same bytes
	Colours []string // names from Palette

	// Workers is the number of goroutines rendering and encoding images; 0 means
	// GOMAXPROCS.
	Workers int
	// Overwrite allows writing into an Out folder that already holds a generated
	// set: its train/, val/, test/ and dataset.json are removed first.
	Overwrite bool
}

// DefaultConfig returns the defaults: 64 px images, 10000/2000/2000 images, 1 to 4
// garments in six colours, folder tree output, seed 1.
func DefaultConfig() Config {
	return Config{
		Source:      DefaultSource,
		Size:        64,
		Train:       10000,
		Val:         2000,
		Test:        2000,
		MinGarments: 1,
		MaxGarments: 4,
		Layout:      LayoutMulti,
		Format:      FormatFolders,
		Seed:        1,
		Colours:     slices.Clone(DefaultColours),
	}
}

// Validate reports every problem with c, or nil.
func (c *Config) Validate() error {
	var errs []error
	if c.Source == "" {
		errs = append(errs, errors.New("source folder is empty"))
	}
	if c.Out == "" {
		errs = append(errs, errors.New("output folder is empty"))
	}
	if c.Size < MinSize || c.Size > MaxSize {
		errs = append(errs, fmt.Errorf("size %d out of range [%d, %d]", c.Size, MinSize, MaxSize))
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"train", c.Train}, {"val", c.Val}, {"test", c.Test}} {
		if n.v < 0 || n.v > MaxPerSplit {
			errs = append(errs, fmt.Errorf("%s count %d out of range [0, %d]", n.name, n.v, MaxPerSplit))
		}
	}
	if c.Train+c.Val+c.Test == 0 {
		errs = append(errs, errors.New("train, val and test counts are all zero"))
	}
	switch c.Layout {
	case LayoutSingle:
	case LayoutMulti:
		if c.MinGarments < 1 || c.MaxGarments > MaxGarments || c.MinGarments > c.MaxGarments {
			errs = append(errs, fmt.Errorf("garments per image [%d, %d] invalid, want 1 <= min <= max <= %d",
				c.MinGarments, c.MaxGarments, MaxGarments))
		} else if g := gridFor(c.MaxGarments); c.Size/g.cols < minCellPixel || c.Size/g.rows < minCellPixel {
			errs = append(errs, fmt.Errorf("size %d too small for %d garments (cells under %d px)", c.Size, c.MaxGarments, minCellPixel))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown layout %q, want %s or %s", c.Layout, LayoutMulti, LayoutSingle))
	}
	if c.Format != FormatFolders && c.Format != FormatCSV {
		errs = append(errs, fmt.Errorf("unknown format %q, want %s or %s", c.Format, FormatFolders, FormatCSV))
	}
	if len(c.Colours) == 0 {
		errs = append(errs, errors.New("no colours"))
	}
	seen := map[string]bool{}
	for _, name := range c.Colours {
		if _, ok := paletteColour(name); !ok {
			errs = append(errs, fmt.Errorf("unknown colour %q, want one of %s", name, strings.Join(paletteNames(), ", ")))
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("colour %q listed twice", name))
		}
		seen[name] = true
	}
	if c.Workers < 0 {
		errs = append(errs, fmt.Errorf("workers %d is negative", c.Workers))
	}
	if len(errs) > 0 {
		return fmt.Errorf("fashion config: %w", errors.Join(errs...))
	}
	return nil
}

func paletteColour(name string) (Colour, bool) {
	for _, c := range Palette {
		if c.Name == name {
			return c, true
		}
	}
	return Colour{}, false
}

func paletteNames() []string {
	names := make([]string, len(Palette))
	for i, c := range Palette {
		names[i] = c.Name
	}
	return names
}
