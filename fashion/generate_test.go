package fashion

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// testConfig is a small, quick config on the committed subset of Fashion-MNIST.
func testConfig(tb testing.TB) Config {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Source = testSource
	cfg.Out = filepath.Join(tb.TempDir(), "out")
	cfg.Size = 32
	cfg.Train, cfg.Val, cfg.Test = 40, 12, 12
	return cfg
}

func generate(tb testing.TB, cfg Config) *Summary {
	tb.Helper()
	sum, err := Generate(context.Background(), cfg, nil)
	if err != nil {
		tb.Fatalf("Generate: %v", err)
	}
	return sum
}

// readTree returns every file under root by slash path relative to root.
func readTree(tb testing.TB, root string) map[string][]byte {
	tb.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		ok     bool
	}{
		{"default", func(*Config) {}, true},
		{"single ignores garment counts", func(c *Config) { c.Layout = LayoutSingle; c.MinGarments = 0 }, true},
		{"csv", func(c *Config) { c.Format = FormatCSV }, true},
		{"only test", func(c *Config) { c.Train, c.Val = 0, 0 }, true},
		{"nine garments", func(c *Config) { c.MaxGarments = 9 }, true},
		{"no out", func(c *Config) { c.Out = "" }, false},
		{"no source", func(c *Config) { c.Source = "" }, false},
		{"size too small", func(c *Config) { c.Size = 8 }, false},
		{"size too large", func(c *Config) { c.Size = 4096 }, false},
		{"cells too small", func(c *Config) { c.Size = 16; c.MaxGarments = 9 }, false},
		{"negative count", func(c *Config) { c.Val = -1 }, false},
		{"too many images", func(c *Config) { c.Train = 1_000_000 }, false},
		{"all counts zero", func(c *Config) { c.Train, c.Val, c.Test = 0, 0, 0 }, false},
		{"min above max", func(c *Config) { c.MinGarments = 3; c.MaxGarments = 2 }, false},
		{"zero garments", func(c *Config) { c.MinGarments = 0 }, false},
		{"ten garments", func(c *Config) { c.MaxGarments = 10 }, false},
		{"bad layout", func(c *Config) { c.Layout = "grid" }, false},
		{"bad format", func(c *Config) { c.Format = "tfrecord" }, false},
		{"no colours", func(c *Config) { c.Colours = nil }, false},
		{"unknown colour", func(c *Config) { c.Colours = []string{"red", "mauve"} }, false},
		{"duplicate colour", func(c *Config) { c.Colours = []string{"red", "red"} }, false},
		{"negative workers", func(c *Config) { c.Workers = -1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Out = "out"
			tt.modify(&cfg)
			err := cfg.Validate()
			if (err == nil) != tt.ok {
				t.Errorf("Validate: got %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestLabelNames(t *testing.T) {
	for _, n := range ClassNames {
		if strings.ContainsAny(n, "_ |,") || n != strings.ToLower(n) {
			t.Errorf("class name %q must be lower case without '_', spaces, '|' or ','", n)
		}
	}
	for _, c := range Palette {
		if strings.ContainsAny(c.Name, "_ |,") || slices.Contains(ClassNames[:], c.Name) {
			t.Errorf("colour name %q must not contain separators or equal a class name", c.Name)
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	base := testConfig(t)
	base.Format = FormatFolders
	same := base
	same.Out = filepath.Join(t.TempDir(), "same")
	same.Workers = 1 // serial vs parallel must not matter
	other := base
	other.Out = filepath.Join(t.TempDir(), "other")
	other.Seed = base.Seed + 1

	generate(t, base)
	generate(t, same)
	generate(t, other)
	a, b, c := readTree(t, base.Out), readTree(t, same.Out), readTree(t, other.Out)
	if len(a) != base.Train+base.Val+base.Test+1 {
		t.Fatalf("got %d files, want %d images and dataset.json", len(a), base.Train+base.Val+base.Test)
	}
	if len(a) != len(b) {
		t.Fatalf("same seed: got %d and %d files", len(a), len(b))
	}
	for path, data := range a {
		if !bytes.Equal(data, b[path]) {
			t.Errorf("same seed: %s differs (or is missing) between runs", path)
		}
	}
	differ := 0
	for path, data := range a {
		if !bytes.Equal(data, c[path]) {
			differ++
		}
	}
	if differ < len(a)-2 {
		t.Errorf("different seed: only %d of %d files differ", differ, len(a))
	}
}

var nameRE = regexp.MustCompile(`^(train|val|test)/([a-z_]+)/(\d{6})\.png$`)

// TestGenerateLabels checks, for every written image, that its folder names
// exactly the garments and colours that were placed, and that the pixels show
// them: every garment is visible and its opaque pixels are nearest to its colour.
func TestGenerateLabels(t *testing.T) {
	for _, tt := range []struct {
		name    string
		colours []string
	}{
		{"default colours", DefaultColours},
		{"whole palette", paletteNames()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Size = 48
			cfg.Colours = tt.colours
			generate(t, cfg)
			jobs := testPlan(t, &cfg)
			byPath := map[string]*Composition{}
			for i := range jobs {
				byPath[filepath.ToSlash(imagePath(cfg.Format, &jobs[i]))] = &jobs[i]
			}
			sets := testSets(t)
			files := readTree(t, cfg.Out)
			seen := 0
			for path, data := range files {
				if path == MetadataFile {
					continue
				}
				m := nameRE.FindStringSubmatch(path)
				if m == nil {
					t.Fatalf("unexpected file %s", path)
				}
				c := byPath[path]
				if c == nil {
					t.Fatalf("%s: no composition for it", path)
				}
				seen++
				checkLabels(t, path, strings.Split(m[2], "_"), c)
				checkPixels(t, path, data, c, sets[c.Set], cfg.Colours)
			}
			if seen != len(jobs) {
				t.Errorf("got %d images, want %d", seen, len(jobs))
			}
		})
	}
}

func checkLabels(t *testing.T, path string, folder []string, c *Composition) {
	t.Helper()
	want := map[string]bool{}
	for _, g := range c.Garments {
		want[ClassNames[g.Class]] = true
		want[g.Colour.Name] = true
	}
	got := map[string]bool{}
	for _, l := range folder {
		got[l] = true
	}
	if len(got) != len(folder) || len(got) != len(want) {
		t.Errorf("%s: folder labels %v, want the set %v", path, folder, want)
	}
	for l := range want {
		if !got[l] {
			t.Errorf("%s: folder labels %v lack %q", path, folder, l)
		}
	}
	if !slices.IsSorted(folder) {
		t.Errorf("%s: folder labels %v not sorted", path, folder)
	}
}

func checkPixels(t *testing.T, path string, data []byte, c *Composition, src *Set, colourNames []string) {
	t.Helper()
	// An RGB PNG: IHDR colour type 2 (truecolour, no alpha), 8 bits.
	if len(data) < 26 || data[24] != 8 || data[25] != 2 {
		t.Fatalf("%s: not an 8-bit RGB png", path)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if got := img.Bounds(); got != image.Rect(0, 0, c.Size, c.Size) {
		t.Fatalf("%s: bounds %v, want %dx%d", path, got, c.Size, c.Size)
	}
	owner := make([]int8, c.Size*c.Size)
	render(c, src, owner)
	var palette []Colour
	for _, n := range colourNames {
		col, _ := paletteColour(n)
		palette = append(palette, col)
	}
	for gi, g := range c.Garments {
		// Fully covered pixels, and how many of them are nearest to the garment's colour.
		var n, match int
		for y := range c.Size {
			for x := range c.Size {
				if owner[y*c.Size+x] != int8(gi) {
					continue
				}
				n++
				r, gr, b, _ := img.At(x, y).RGBA()
				if nearest(palette, int(r>>8), int(gr>>8), int(b>>8)) == g.Colour.Name {
					match++
				}
			}
		}
		// Compare with the garment drawn alone: overlap must hide little of it.
		alone := *c
		alone.Garments = []Garment{g}
		soloOwner := make([]int8, len(owner))
		render(&alone, src, soloOwner)
		solo := 0
		for _, o := range soloOwner {
			if o == 0 {
				solo++
			}
		}
		if solo == 0 || n*100 < solo*60 {
			t.Errorf("%s: garment %d (%s %s) shows %d of its %d opaque pixels, want >= 60%%",
				path, gi, g.Colour.Name, ClassNames[g.Class], n, solo)
			continue
		}
		if match*100 < n*95 {
			t.Errorf("%s: garment %d: %d of %d opaque pixels are nearest to %s, want >= 95%%",
				path, gi, match, n, g.Colour.Name)
		}
	}
}

func nearest(palette []Colour, r, g, b int) string {
	best, bestD := "", 1<<30
	for _, c := range palette {
		dr, dg, db := r-int(c.R), g-int(c.G), b-int(c.B)
		if d := dr*dr + dg*dg + db*db; d < bestD {
			best, bestD = c.Name, d
		}
	}
	return best
}

func testSets(t testing.TB) map[string]*Set {
	t.Helper()
	sets := map[string]*Set{}
	for _, name := range []string{"train", "t10k"} {
		s, err := LoadSet(testSource, name)
		if err != nil {
			t.Fatal(err)
		}
		sets[name] = s
	}
	return sets
}

func testPlan(t testing.TB, cfg *Config) []Composition {
	t.Helper()
	var colours []Colour
	for _, n := range cfg.Colours {
		c, _ := paletteColour(n)
		colours = append(colours, c)
	}
	jobs, err := plan(cfg, colours, testSets(t))
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

func TestSplitsDisjoint(t *testing.T) {
	cfg := testConfig(t)
	cfg.Train, cfg.Val, cfg.Test = 500, 200, 200
	jobs := testPlan(t, &cfg)
	sources := map[string]map[int]bool{SplitTrain: {}, SplitVal: {}, SplitTest: {}}
	counts := map[string]int{}
	for _, c := range jobs {
		counts[c.Split]++
		wantSet := "train"
		if c.Split == SplitTest {
			wantSet = "t10k"
		}
		if c.Set != wantSet {
			t.Fatalf("%s image %d drawn from %s, want %s", c.Split, c.ID, c.Set, wantSet)
		}
		if n := len(c.Garments); n < cfg.MinGarments || n > cfg.MaxGarments {
			t.Errorf("%s image %d has %d garments, want %d..%d", c.Split, c.ID, n, cfg.MinGarments, cfg.MaxGarments)
		}
		for _, g := range c.Garments {
			sources[c.Split][g.Source] = true
		}
	}
	if counts[SplitTrain] != 500 || counts[SplitVal] != 200 || counts[SplitTest] != 200 {
		t.Fatalf("counts %v, want 500/200/200", counts)
	}
	for i := range sources[SplitVal] {
		if sources[SplitTrain][i] {
			t.Errorf("train source image %d also used in val", i)
		}
	}
	// The draws cover most of each pool: the 300-image subset gives 250 train and
	// 50 val sources.
	if n := len(sources[SplitTrain]); n < 200 {
		t.Errorf("train used %d distinct source images, want most of 250", n)
	}
	if n := len(sources[SplitVal]); n < 45 {
		t.Errorf("val used %d distinct source images, want most of 50", n)
	}
}

// TestGenerateTestOnlyReadsT10k generates a test split from a source folder that
// has only the t10k files.
func TestGenerateTestOnlyReadsT10k(t *testing.T) {
	src := t.TempDir()
	for _, name := range []string{"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} {
		b, err := os.ReadFile(filepath.Join(testSource, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(t)
	cfg.Source = src
	cfg.Train, cfg.Val, cfg.Test = 0, 0, 10
	sum := generate(t, cfg)
	if len(sum.Splits) != 1 || sum.Splits[0].Name != SplitTest || sum.Splits[0].Images != 10 {
		t.Errorf("summary splits %+v, want only test with 10 images", sum.Splits)
	}
	cfg.Out = filepath.Join(t.TempDir(), "out")
	cfg.Val = 1
	if _, err := Generate(context.Background(), cfg, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("val without train files: got %v, want a not-exist error", err)
	}
}

func TestSingleLayout(t *testing.T) {
	cfg := testConfig(t)
	cfg.Layout = LayoutSingle
	cfg.Train, cfg.Val, cfg.Test = 60, 10, 10
	generate(t, cfg)
	re := regexp.MustCompile(`^(train|val|test)/(` + strings.Join(DefaultColours, "|") + `)_(` +
		strings.Join(ClassNames[:], "|") + `)/\d{6}\.png$`)
	files := readTree(t, cfg.Out)
	for path := range files {
		if path != MetadataFile && !re.MatchString(path) {
			t.Errorf("single layout: file %s, want <split>/<colour>_<garment>/<id>.png", path)
		}
	}
	for _, c := range testPlan(t, &cfg) {
		if len(c.Garments) != 1 {
			t.Errorf("%s %d: %d garments, want 1", c.Split, c.ID, len(c.Garments))
		}
	}
	if len(files) != 81 {
		t.Errorf("got %d files, want 80 images and dataset.json", len(files))
	}
}

func TestCSVFormat(t *testing.T) {
	cfg := testConfig(t)
	cfg.Format = FormatCSV
	generate(t, cfg)
	jobs := testPlan(t, &cfg)
	for _, split := range splitNames {
		f, err := os.Open(filepath.Join(cfg.Out, split, "labels.csv"))
		if err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(f).ReadAll()
		f.Close()
		if err != nil {
			t.Fatalf("%s labels.csv: %v", split, err)
		}
		if !slices.Equal(rows[0], []string{"path", "labels"}) {
			t.Errorf("%s header: got %v, want path,labels", split, rows[0])
		}
		var want []*Composition
		for i := range jobs {
			if jobs[i].Split == split {
				want = append(want, &jobs[i])
			}
		}
		if len(rows)-1 != len(want) {
			t.Fatalf("%s: %d rows, want %d", split, len(rows)-1, len(want))
		}
		for i, row := range rows[1:] {
			c := want[i]
			if row[0] != "images/"+c.FileName() {
				t.Errorf("%s row %d path %q, want images/%s", split, i, row[0], c.FileName())
			}
			if got := strings.Split(row[1], " "); !slices.Equal(got, c.Labels()) {
				t.Errorf("%s row %d labels %q, want %v", split, i, row[1], c.Labels())
			}
			if _, err := os.Stat(filepath.Join(cfg.Out, split, row[0])); err != nil {
				t.Errorf("%s row %d: %v", split, i, err)
			}
		}
		entries, err := os.ReadDir(filepath.Join(cfg.Out, split))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 2 {
			t.Errorf("%s holds %d entries, want images/ and labels.csv", split, len(entries))
		}
	}
}

func TestSizes(t *testing.T) {
	for _, size := range []int{32, 96} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Size = size
			cfg.Train, cfg.Val, cfg.Test = 8, 4, 4
			generate(t, cfg)
			for path, data := range readTree(t, cfg.Out) {
				if path == MetadataFile {
					continue
				}
				cfgImg, err := png.DecodeConfig(bytes.NewReader(data))
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				if cfgImg.Width != size || cfgImg.Height != size {
					t.Errorf("%s: %dx%d, want %dx%d", path, cfgImg.Width, cfgImg.Height, size, size)
				}
			}
		})
	}
}

func TestMetadataAndSummary(t *testing.T) {
	cfg := testConfig(t)
	sum := generate(t, cfg)
	b, err := os.ReadFile(filepath.Join(cfg.Out, MetadataFile))
	if err != nil {
		t.Fatal(err)
	}
	var m metadata
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", MetadataFile, err)
	}
	if m.Seed != cfg.Seed || m.Size != cfg.Size || m.Counts[SplitVal] != cfg.Val || len(m.Colours) != len(cfg.Colours) {
		t.Errorf("metadata %+v does not match config %+v", m, cfg)
	}
	total := 0
	for _, sp := range sum.Splits {
		total += sp.Images
		if m.LabelCounts[sp.Name]["red"] != sp.Labels["red"] {
			t.Errorf("%s red count: metadata %d, summary %d", sp.Name, m.LabelCounts[sp.Name]["red"], sp.Labels["red"])
		}
	}
	if total != cfg.Train+cfg.Val+cfg.Test {
		t.Errorf("summary counts %d images, want %d", total, cfg.Train+cfg.Val+cfg.Test)
	}
	var out bytes.Buffer
	if err := sum.Print(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"images", "train", "val", "test", "red", "tshirt"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary text lacks %q:\n%s", want, out.String())
		}
	}
}

func TestGenerateOverwrite(t *testing.T) {
	cfg := testConfig(t)
	cfg.Train, cfg.Val, cfg.Test = 4, 2, 2
	generate(t, cfg)
	if _, err := Generate(context.Background(), cfg, nil); !errors.Is(err, ErrOutExists) {
		t.Fatalf("second Generate into the same folder: got %v, want ErrOutExists", err)
	}
	stale := filepath.Join(cfg.Out, SplitTrain, "stale.png")
	if err := os.WriteFile(stale, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(cfg.Out, "notes.txt")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Overwrite = true
	generate(t, cfg)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale image survived an overwrite: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("overwrite removed a file that is not part of the set: %v", err)
	}
}

func TestGenerateCancelled(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Generate(ctx, cfg, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Generate with a cancelled context: got %v, want context.Canceled", err)
	}
}

func TestGenerateBadSource(t *testing.T) {
	cfg := testConfig(t)
	cfg.Source = t.TempDir()
	if _, err := Generate(context.Background(), cfg, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Generate from an empty folder: got %v, want a not-exist error", err)
	}
	if _, err := os.Stat(cfg.Out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed load must not create the output folder: %v", err)
	}
}
