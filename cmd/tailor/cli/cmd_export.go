package cli

import (
	"context"
	"fmt"

	"github.com/tailorml/tailor/internal/version"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/onnxexport"
)

func init() {
	register("export", "write a model in another format (ONNX)", runExport)
}

func runExport(_ context.Context, env *Env) int {
	fs := newFlagSet(env, "export", "MODEL OUT", `
Writes MODEL (a model.tailor file) in another format. --format onnx writes
an ONNX model (opset 13, NCHW float32, any batch size) of the whole net in
inference form: input "images" [batch, 3, S, S], output "probabilities"
[batch, labels], BatchNorm with the model's statistics, no dropout. The
labels, the per-label thresholds and how to prepare an image (size,
interpolation, RGB, (pixel/255 − mean) / std per channel) are in the
file's metadata_props; README.md, "Export to ONNX", shows how to run it.`)
	format := fs.String("format", "onnx", "output `format`: onnx")
	if code, done := parse(env, fs); done {
		return code
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(env.Stderr, "tailor export: want MODEL and OUT")
		return 2
	}
	if *format != "onnx" {
		fmt.Fprintf(env.Stderr, "tailor export: --format %q: want onnx\n", *format)
		return 2
	}
	b, err := model.Load(fs.Arg(0))
	if err != nil {
		return fail(env, err)
	}
	n, err := onnxexport.WriteFile(fs.Arg(1), b, onnxexport.Options{ProducerVersion: version.Get().String()})
	if err != nil {
		return fail(env, err)
	}
	cfg := b.Net.Config()
	fmt.Fprintf(env.Stdout, "wrote %s: ONNX opset %d, %d bytes; input %s [batch, %d, %d, %d], output %s [batch, %d]\n",
		fs.Arg(1), onnxexport.Opset, n, onnxexport.InputName, cfg.Channels, cfg.Size, cfg.Size, onnxexport.OutputName, cfg.Labels)
	return 0
}
