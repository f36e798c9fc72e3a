package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tailorml/tailor/fashion"
)

func init() {
	register("data", "make a training data set (tailor data fashion OUT)", runData)
}

// datasets are the generators under "tailor data".
var datasets = []struct {
	name, summary string
	run           func(ctx context.Context, env *Env) int
}{
	{"fashion", "multi-label clothing images composed from Fashion-MNIST (garment types + colours)", runDataFashion},
}

func runData(ctx context.Context, env *Env) int {
	if len(env.Args) == 0 || env.Args[0] == "-h" || env.Args[0] == "--help" || env.Args[0] == "help" {
		out := env.Stdout
		code := 0
		if len(env.Args) == 0 {
			out, code = env.Stderr, 2
		}
		fmt.Fprintln(out, "Usage: tailor data <dataset> [flags] OUT\n\nWrites a data set to the folder OUT.\n\nData sets:")
		for _, d := range datasets {
			fmt.Fprintf(out, "  %-10s %s\n", d.name, d.summary)
		}
		fmt.Fprintln(out, "\nRun 'tailor data <dataset> --help' for its flags.")
		return code
	}
	for _, d := range datasets {
		if d.name == env.Args[0] {
			sub := *env
			sub.Args = env.Args[1:]
			return d.run(ctx, &sub)
		}
	}
	fmt.Fprintf(env.Stderr, "tailor data: unknown data set %q (run 'tailor data --help')\n", env.Args[0])
	return 2
}

func runDataFashion(ctx context.Context, env *Env) int {
	cfg := fashion.DefaultConfig()
	fs := newFlagSet(env, "data fashion", "OUT", `
Composes RGB images of several (by default 1 to 4) Fashion-MNIST garments, each tinted in a colour,
over a plain or lightly textured grey background. An image's labels are the
garment types and the colours it contains, e.g. {black, blue, dress, sneaker}.
Garment labels: `+strings.Join(fashion.ClassNames[:], ", ")+`.

Writes OUT/train, OUT/val and OUT/test. With --format folders (the default) an
image goes to OUT/<split>/<labels sorted, joined by '_'>/<id>.png, e.g.
OUT/train/black_blue_dress_sneaker/000123.png; with --format csv to
OUT/<split>/images/<id>.png, listed in OUT/<split>/labels.csv (header "path,labels",
path relative to the csv, labels separated by one space). --layout single makes
the tutorial's set: one garment in one colour, in OUT/<split>/<colour>_<garment>/.
Train and val garments come from disjoint parts of Fashion-MNIST's train split
(every 6th image is held out for val), test garments only from t10k.
OUT/dataset.json records how the set was made. The same flags and --seed give
byte-identical files.`)
	fs.StringVar(&cfg.Source, "source", cfg.Source, "`folder` with the Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...), gzip'd or not")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "image width and height in `pixels`")
	fs.IntVar(&cfg.Train, "train", cfg.Train, "number of training images")
	fs.IntVar(&cfg.Val, "val", cfg.Val, "number of validation images")
	fs.IntVar(&cfg.Test, "test", cfg.Test, "number of test images")
	fs.IntVar(&cfg.MinGarments, "min-garments", cfg.MinGarments, "fewest garments per image (multi layout)")
	fs.IntVar(&cfg.MaxGarments, "max-garments", cfg.MaxGarments, fmt.Sprintf("most garments per image (multi layout, at most %d)", fashion.MaxGarments))
	fs.StringVar(&cfg.Layout, "layout", cfg.Layout, "image `layout`: multi (several garments and colours per image) or single (one garment in one colour, folders named colour_garment)")
	fs.StringVar(&cfg.Format, "format", cfg.Format, "output `format`: folders (one folder per label set) or csv (flat images plus labels.csv per split)")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed; the same seed gives the same files")
	colours := fs.String("colours", strings.Join(cfg.Colours, ","), "comma-separated garment `colours`, from: "+fashionColourNames())
	fs.IntVar(&cfg.Workers, "workers", 0, "goroutines encoding images (0: GOMAXPROCS)")
	fs.BoolVar(&cfg.Overwrite, "force", false, "replace train/, val/, test/ and dataset.json if OUT already has them")
	if code, done := parse(env, fs); done {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fail(env, errors.New("data fashion: want exactly one argument, the output folder, after the flags"))
	}
	cfg.Out = fs.Arg(0)
	cfg.Colours = nil
	for c := range strings.SplitSeq(*colours, ",") {
		if c = strings.TrimSpace(c); c != "" {
			cfg.Colours = append(cfg.Colours, c)
		}
	}
	if err := cfg.Validate(); err != nil {
		return fail(env, err)
	}
	sum, err := fashion.Generate(ctx, cfg, env.Log)
	if err != nil {
		return fail(env, err)
	}
	if err := sum.Print(env.Stdout); err != nil {
		return fail(env, err)
	}
	return 0
}

func fashionColourNames() string {
	names := make([]string, len(fashion.Palette))
	for i, c := range fashion.Palette {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}
