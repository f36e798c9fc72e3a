package cli

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
)

func init() {
	register("predict", "print each label's probability for images", runPredict)
}

// Prediction is one image's result.
type Prediction struct {
	Image  string       `json:"image"`
	Labels []LabelScore `json:"labels,omitempty"`
	Error  string       `json:"error,omitempty"`
}

// LabelScore is one label's probability and decision.
type LabelScore struct {
	Label       string  `json:"label"`
	Probability float64 `json:"probability"`
	Threshold   float64 `json:"threshold"`
	Present     bool    `json:"present"`
}

func runPredict(ctx context.Context, env *Env) int {
	fs := newFlagSet(env, "predict", "MODEL IMAGE...", `
Prints every label's probability for each image (JPEG, PNG, GIF, WebP or
BMP), highest first, marking the labels at or above the model's tuned
threshold. Images are turned upright and resized as ingest prepared the
training images (the interpolation and resize mode the model recorded).

--format table (the default) prints each image's path, then one line per
label, * marking the labels present; json prints a list of
{image, labels: [{label, probability, threshold, present}], error}; csv
prints a header and one row per image and label (image, rank, label,
probability, threshold, present, error). --top K keeps the K most probable
labels of each image. An image that cannot be read is reported in the
output and makes the exit code 1.`)
	format := fs.String("format", "table", "output `format`: table, json or csv")
	asJSON := fs.Bool("json", false, "print JSON (the same as --format json)")
	top := fs.Int("top", 0, "print only the `K` most probable labels per image (0: all)")
	if code, done := parse(env, fs); done {
		return code
	}
	if *asJSON {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "format" })
		if set && *format != "json" {
			fmt.Fprintf(env.Stderr, "tailor predict: --json and --format %s disagree\n", *format)
			return 2
		}
		*format = "json"
	}
	if !slices.Contains(predictFormats, *format) {
		fmt.Fprintf(env.Stderr, "tailor predict: --format %q: want %s\n", *format, strings.Join(predictFormats, ", "))
		return 2
	}
	if *top < 0 {
		fmt.Fprintf(env.Stderr, "tailor predict: --top %d: want 0 (all) or more\n", *top)
		return 2
	}
	if fs.NArg() < 2 {
		fmt.Fprintln(env.Stderr, "tailor predict: want MODEL and at least one IMAGE")
		return 2
	}
	b, err := model.Load(fs.Arg(0))
	if err != nil {
		return fail(env, err)
	}
	cfg := b.Net.Config()
	n := cfg.InputLen()
	x := make([]float32, n)
	probs := make([]float32, cfg.Labels)
	var out []Prediction
	failed := 0
	for _, path := range fs.Args()[1:] {
		if err := ctx.Err(); err != nil {
			return fail(env, err)
		}
		p := Prediction{Image: path}
		data, err := os.ReadFile(path)
		var pix []byte
		if err == nil {
			pix, err = shard.DecodeImageOpts(data, shard.DecodeOptionsFromMeta(cfg.Size, b.Meta))
		}
		if err == nil {
			input.Normalize(x, pix, cfg.Size, cfg.Size, cfg.Channels, b.Mean, b.Std)
			err = b.Net.Predict(x, 1, probs)
		}
		if err != nil {
			p.Error = err.Error()
			failed++
		} else {
			p.Labels = rankLabels(b.Labels, probs, b.Thresholds, *top)
		}
		out = append(out, p)
	}
	if err := writePredictions(env.Stdout, *format, out); err != nil {
		return fail(env, err)
	}
	if failed > 0 {
		fmt.Fprintf(env.Stderr, "tailor predict: %d of %d images could not be read\n", failed, len(out))
		return 1
	}
	return 0
}

// predictFormats are the values of predict's --format.
var predictFormats = []string{"table", "json", "csv"}

// rankLabels returns every label's score, most probable first (ties in
// vocabulary order), the top k of them if k > 0.
func rankLabels(labels []string, probs, thresholds []float32, k int) []LabelScore {
	out := make([]LabelScore, len(labels))
	for i, l := range labels {
		out[i] = LabelScore{Label: l, Probability: float64(probs[i]), Threshold: float64(thresholds[i]), Present: probs[i] >= thresholds[i]}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Probability > out[j].Probability })
	if k > 0 && len(out) > k {
		out = out[:k]
	}
	return out
}

// writePredictions prints predictions in format (one of predictFormats).
func writePredictions(w io.Writer, format string, preds []Prediction) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if preds == nil {
			preds = []Prediction{}
		}
		if err := enc.Encode(preds); err != nil {
			return fmt.Errorf("print predictions: %w", err)
		}
		return nil
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"image", "rank", "label", "probability", "threshold", "present", "error"})
		for _, p := range preds {
			if p.Error != "" {
				_ = cw.Write([]string{p.Image, "", "", "", "", "", p.Error})
				continue
			}
			for i, l := range p.Labels {
				_ = cw.Write([]string{p.Image, strconv.Itoa(i + 1), l.Label, strconv.FormatFloat(l.Probability, 'g', -1, 32),
					strconv.FormatFloat(l.Threshold, 'g', -1, 32), strconv.FormatBool(l.Present), ""})
			}
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return fmt.Errorf("print predictions: %w", err)
		}
		return nil
	case "table":
		width := 12
		for _, p := range preds {
			for _, l := range p.Labels {
				width = max(width, len(l.Label)+1)
			}
		}
		bw := bufio.NewWriter(w)
		for _, p := range preds {
			fmt.Fprintln(bw, p.Image)
			if p.Error != "" {
				fmt.Fprintf(bw, "  error: %s\n", p.Error)
				continue
			}
			for _, l := range p.Labels {
				mark := " "
				if l.Present {
					mark = "*"
				}
				fmt.Fprintf(bw, "  %s %-*s %5.1f%%\n", mark, width, l.Label+":", 100*l.Probability)
			}
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("print predictions: %w", err)
		}
		return nil
	}
	return fmt.Errorf("print predictions: format %q: want %s", format, strings.Join(predictFormats, ", "))
}
