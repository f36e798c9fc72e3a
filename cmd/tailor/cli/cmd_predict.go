package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"

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
BMP), highest first, marking with * the labels above the model's tuned
threshold. Images are turned upright and resized as ingest prepared the
training images (the interpolation and resize mode the model recorded).`)
	asJSON := fs.Bool("json", false, "print JSON")
	top := fs.Int("top", 0, "print only the top N labels per image (0: all)")
	if code, done := parse(env, fs); done {
		return code
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
			for i, l := range b.Labels {
				p.Labels = append(p.Labels, LabelScore{Label: l, Probability: float64(probs[i]), Threshold: float64(b.Thresholds[i]), Present: probs[i] >= b.Thresholds[i]})
			}
			sort.SliceStable(p.Labels, func(i, j int) bool { return p.Labels[i].Probability > p.Labels[j].Probability })
			if *top > 0 && len(p.Labels) > *top {
				p.Labels = p.Labels[:*top]
			}
		}
		out = append(out, p)
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fail(env, err)
		}
	} else {
		for _, p := range out {
			fmt.Fprintln(env.Stdout, p.Image)
			if p.Error != "" {
				fmt.Fprintf(env.Stdout, "  error: %s\n", p.Error)
				continue
			}
			for _, l := range p.Labels {
				mark := " "
				if l.Present {
					mark = "*"
				}
				fmt.Fprintf(env.Stdout, "  %s %-12s %5.1f%%\n", mark, l.Label+":", 100*l.Probability)
			}
		}
	}
	if failed > 0 {
		fmt.Fprintf(env.Stderr, "tailor predict: %d of %d images could not be read\n", failed, len(out))
		return 1
	}
	return 0
}
