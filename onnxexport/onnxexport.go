// Package onnxexport writes a trained model (model.Bundle) as an ONNX model
// (opset 13, IR version 7) that any ONNX runtime can run: the whole
// SmallerVGGNet in inference form, with the label vocabulary, the decision
// thresholds and the input preparation in the model's metadata_props.
//
// The graph, NCHW float32 throughout, is the net tailor runs for predict:
//
//	images [batch, C, S, S]
//	  5 × Conv 3×3 (pads 1, + bias) → Relu → BatchNormalization
//	      (MaxPool 3×3 stride 3 after the 1st, 2×2 stride 2 after the 3rd and 5th)
//	  Flatten (axis 1: C·H·W order) → Gemm (dense, + bias) → Relu
//	  → BatchNormalization → Gemm (+ bias) → Sigmoid
//	probabilities [batch, L]
//
// BatchNormalization uses the model's running mean and variance and its
// epsilon; dropout, the identity at inference, has no node. The weights are
// initializers named after tailor's tensors with "/" replaced by "_"
// (conv1_w, bn1_mean, dense1_w, …). The protobuf types are those of the
// gonnx module's onnx package; nothing here encodes protobuf by hand.
package onnxexport

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/tailorml/tailor/model"
)

// The ONNX versions written.
const (
	Opset     = 13
	IRVersion = 7 // the IR version of opset 13 (ONNX 1.8)
)

// Names of the graph's input, output and dynamic batch dimension.
const (
	InputName  = "images"
	OutputName = "probabilities"
	BatchDim   = "batch"
	Producer   = "tailor"
)

// Keys of the model's metadata_props. Lists are JSON arrays; numbers are
// decimal strings. The network's input is, per channel c,
// (pixel·input_scale − input_mean[c]) / input_std[c], with pixels in
// input_channel_order, the image first turned upright (EXIF orientation)
// and brought to input_size × input_size by resize (stretch, pad or crop)
// with resize_interpolation, transparent pixels composited over white
// (tailor predict's preparation).
const (
	KeyLabels        = "labels"               // vocabulary, in output order
	KeyThresholds    = "thresholds"           // per-label decision thresholds, in output order
	KeyMean          = "input_mean"           // per-channel mean, on [0,1] pixels
	KeyStd           = "input_std"            // per-channel standard deviation, on [0,1] pixels
	KeyScale         = "input_scale"          // multiplies 8-bit pixel values: 1/255
	KeySize          = "input_size"           // height and width, pixels
	KeyChannels      = "input_channels"       // channels
	KeyChannelOrder  = "input_channel_order"  // RGB
	KeyLayout        = "input_layout"         // NCHW
	KeyInterpolation = "resize_interpolation" // catmullrom or bilinear
	KeyResize        = "resize"               // stretch, pad (white bands) or crop (the centre square)
	KeyPreprocessing = "preprocessing"        // the above in one sentence
	// MetaPrefix prefixes the model file's provenance entries (run, epoch,
	// val_map, …): "tailor.epoch".
	MetaPrefix = "tailor."
)

// defaultInterpolation is what tailor uses when a model file names none
// (shard.DefaultBuildConfig's, kept here so that the exporter does not
// depend on the dataset format).
const defaultInterpolation = "catmullrom"

// Options are what the model file does not say.
type Options struct {
	// ProducerVersion is the tailor version writing the file
	// (producer_version); empty leaves it out.
	ProducerVersion string
}

// pools[i] is the max-pool window (and stride) after conv block i; 0: none.
// It mirrors model.Net's inference graph.
var pools = [5]int{3, 0, 2, 0, 2}

// Model builds the ONNX model of b.
func Model(b *model.Bundle, opt Options) (*onnx.ModelProto, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("export onnx: %w", err)
	}
	cfg := b.Net.Config()
	params := map[string]*model.Param{}
	for _, p := range b.Net.Params() {
		params[p.Name] = p
	}
	bns := map[string]model.BNStats{}
	for _, st := range b.Net.BN() {
		bns[st.Name] = st
	}
	gb := &graphBuilder{params: params, bns: bns, used: map[string]bool{}}

	h := InputName
	for i := range pools {
		n := i + 1
		conv := gb.node("Conv", fmt.Sprintf("block%d_conv", n),
			[]string{h, gb.param(fmt.Sprintf("conv%d/w", n)), gb.param(fmt.Sprintf("conv%d/b", n))},
			ints("kernel_shape", 3, 3), ints("pads", 1, 1, 1, 1), ints("strides", 1, 1), ints("dilations", 1, 1), intAttr("group", 1))
		relu := gb.node("Relu", fmt.Sprintf("block%d_relu", n), []string{conv})
		h = gb.batchNorm(fmt.Sprintf("block%d_bn", n), fmt.Sprintf("bn%d", n), relu, cfg.BNEps)
		if k := pools[i]; k > 0 {
			h = gb.node("MaxPool", fmt.Sprintf("block%d_pool", n), []string{h},
				ints("kernel_shape", int64(k), int64(k)), ints("strides", int64(k), int64(k)), ints("pads", 0, 0, 0, 0))
		}
	}
	h = gb.node("Flatten", "flatten", []string{h}, intAttr("axis", 1))
	h = gb.node("Gemm", "dense1", []string{h, gb.param("dense1/w"), gb.param("dense1/b")})
	h = gb.node("Relu", "dense1_relu", []string{h})
	h = gb.batchNorm("dense1_bn", "bn6", h, cfg.BNEps)
	h = gb.node("Gemm", "logits", []string{h, gb.param("out/w"), gb.param("out/b")})
	gb.nodes = append(gb.nodes, &onnx.NodeProto{Name: "sigmoid", OpType: "Sigmoid", Input: []string{h}, Output: []string{OutputName}})
	if gb.err != nil {
		return nil, fmt.Errorf("export onnx: %w", gb.err)
	}
	// every tensor of the model file is in the graph, once
	for name := range params {
		if !gb.used[name] {
			return nil, fmt.Errorf("export onnx: the graph does not use tensor %s", name)
		}
	}
	for name := range bns {
		if !gb.used[name+"/mean"] {
			return nil, fmt.Errorf("export onnx: the graph does not use the statistics of %s", name)
		}
	}

	s := int64(cfg.Size)
	graph := &onnx.GraphProto{
		Name:        "smaller_vggnet",
		Node:        gb.nodes,
		Initializer: gb.inits,
		Input:       []*onnx.ValueInfoProto{tensorInfo(InputName, batchDim(), fixedDim(int64(cfg.Channels)), fixedDim(s), fixedDim(s))},
		Output:      []*onnx.ValueInfoProto{tensorInfo(OutputName, batchDim(), fixedDim(int64(cfg.Labels)))},
		DocString: fmt.Sprintf("SmallerVGGNet: %d×%d×%d input (NCHW), one sigmoid probability per label (%d labels).",
			cfg.Channels, cfg.Size, cfg.Size, cfg.Labels),
	}
	props, err := metadata(b)
	if err != nil {
		return nil, fmt.Errorf("export onnx: %w", err)
	}
	return &onnx.ModelProto{
		IrVersion:       IRVersion,
		OpsetImport:     []*onnx.OperatorSetIdProto{{Domain: "", Version: Opset}},
		ProducerName:    Producer,
		ProducerVersion: opt.ProducerVersion,
		DocString: "A tailor multi-label image classifier. Input " + InputName + ": " + preprocessing(b) +
			" Output " + OutputName + ": one independent probability per label, in the order of the labels metadata entry;" +
			" a label is present when its probability is at least its threshold (thresholds entry).",
		Graph:         graph,
		MetadataProps: props,
	}, nil
}

// Marshal returns the ONNX model of b, encoded.
func Marshal(b *model.Bundle, opt Options) ([]byte, error) {
	m, err := Model(b, opt)
	if err != nil {
		return nil, err
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("export onnx: encode: %w", err)
	}
	return data, nil
}

// WriteFile writes the ONNX model of b to path atomically (a temporary file
// in the same folder, then a rename) and returns its size in bytes.
func WriteFile(path string, b *model.Bundle, opt Options) (int, error) {
	data, err := Marshal(b, opt)
	if err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return 0, fmt.Errorf("write onnx model: %w", err)
	}
	defer os.Remove(tmp.Name())
	// readable by all, as a file meant for other programs (CreateTemp's is 0600)
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return 0, fmt.Errorf("write onnx model %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return 0, fmt.Errorf("write onnx model %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return 0, fmt.Errorf("write onnx model %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("write onnx model %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("write onnx model: %w", err)
	}
	return len(data), nil
}

// InitializerName is the ONNX initializer name of a model tensor: "/"
// becomes "_" (conv1/w → conv1_w), as ONNX names follow C identifiers.
func InitializerName(tensor string) string { return strings.ReplaceAll(tensor, "/", "_") }

type graphBuilder struct {
	params map[string]*model.Param
	bns    map[string]model.BNStats
	used   map[string]bool
	nodes  []*onnx.NodeProto
	inits  []*onnx.TensorProto
	err    error
}

// node appends a node with one output, named after the node, and returns
// the output's name.
func (gb *graphBuilder) node(op, name string, in []string, attrs ...*onnx.AttributeProto) string {
	gb.nodes = append(gb.nodes, &onnx.NodeProto{Name: name, OpType: op, Input: in, Output: []string{name}, Attribute: attrs})
	return name
}

// param adds a model parameter as an initializer and returns its name.
func (gb *graphBuilder) param(name string) string {
	p, ok := gb.params[name]
	if !ok {
		if gb.err == nil {
			gb.err = fmt.Errorf("the model has no tensor %s", name)
		}
		return ""
	}
	return gb.initializer(name, p.Shape, p.Data)
}

func (gb *graphBuilder) initializer(name string, shape []int, data []float32) string {
	gb.used[name] = true
	dims := make([]int64, len(shape))
	for i, d := range shape {
		dims[i] = int64(d)
	}
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	n := InitializerName(name)
	gb.inits = append(gb.inits, &onnx.TensorProto{Name: n, Dims: dims, DataType: int32(onnx.TensorProto_FLOAT), RawData: raw})
	return n
}

// batchNorm appends an inference BatchNormalization of x with layer bn's
// γ, β and running statistics.
func (gb *graphBuilder) batchNorm(name, bn, x string, eps float64) string {
	st, ok := gb.bns[bn]
	if !ok {
		if gb.err == nil {
			gb.err = fmt.Errorf("the model has no statistics for %s", bn)
		}
		return ""
	}
	in := []string{x, gb.param(bn + "/gamma"), gb.param(bn + "/beta"),
		gb.initializer(bn+"/mean", []int{len(st.Mean)}, st.Mean),
		gb.initializer(bn+"/var", []int{len(st.Variance)}, st.Variance)}
	return gb.node("BatchNormalization", name, in, floatAttr("epsilon", float32(eps)))
}

func ints(name string, v ...int64) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_INTS, Ints: v}
}

func intAttr(name string, v int64) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_INT, I: v}
}

func floatAttr(name string, v float32) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_FLOAT, F: v}
}

func batchDim() *onnx.TensorShapeProto_Dimension {
	return &onnx.TensorShapeProto_Dimension{Value: &onnx.TensorShapeProto_Dimension_DimParam{DimParam: BatchDim}}
}

func fixedDim(v int64) *onnx.TensorShapeProto_Dimension {
	return &onnx.TensorShapeProto_Dimension{Value: &onnx.TensorShapeProto_Dimension_DimValue{DimValue: v}}
}

func tensorInfo(name string, dims ...*onnx.TensorShapeProto_Dimension) *onnx.ValueInfoProto {
	return &onnx.ValueInfoProto{Name: name, Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{TensorType: &onnx.TypeProto_Tensor{
		ElemType: int32(onnx.TensorProto_FLOAT),
		Shape:    &onnx.TensorShapeProto{Dim: dims},
	}}}}
}

func interpolation(b *model.Bundle) string {
	if s := b.Meta["interpolation"]; s != "" {
		return s
	}
	return defaultInterpolation
}

// resizeMode is how the model's images were brought to the square: the
// model file's "resize" (stretch when it names none, as ingest's default).
func resizeMode(b *model.Bundle) string {
	if s := b.Meta["resize"]; s != "" {
		return s
	}
	return "stretch"
}

func channelOrder(c int) string {
	if c == 3 {
		return "RGB"
	}
	return fmt.Sprintf("%d channels", c)
}

func preprocessing(b *model.Bundle) string {
	cfg := b.Net.Config()
	how := map[string]string{"pad": "pad (white bands, aspect kept)", "crop": "crop the centre square and resize"}[resizeMode(b)]
	if how == "" {
		how = "stretch"
	}
	return fmt.Sprintf("turn the image upright (EXIF orientation), %s it to %d×%d (%s; transparent pixels over white), %s, NCHW float32, each channel c as (pixel/255 − input_mean[c]) / input_std[c].",
		how, cfg.Size, cfg.Size, interpolation(b), channelOrder(cfg.Channels))
}

// metadata is the model's metadata_props: what a caller needs to prepare
// images and read the outputs, then the model file's provenance.
func metadata(b *model.Bundle) ([]*onnx.StringStringEntryProto, error) {
	cfg := b.Net.Config()
	var props []*onnx.StringStringEntryProto
	add := func(k, v string) { props = append(props, &onnx.StringStringEntryProto{Key: k, Value: v}) }
	for _, e := range []struct {
		key string
		v   any
	}{{KeyLabels, b.Labels}, {KeyThresholds, b.Thresholds}, {KeyMean, b.Mean}, {KeyStd, b.Std}} {
		js, err := json.Marshal(e.v)
		if err != nil {
			return nil, fmt.Errorf("metadata %s: %w", e.key, err)
		}
		add(e.key, string(js))
	}
	add(KeyScale, strconv.FormatFloat(1.0/255, 'g', -1, 64))
	add(KeySize, strconv.Itoa(cfg.Size))
	add(KeyChannels, strconv.Itoa(cfg.Channels))
	add(KeyChannelOrder, channelOrder(cfg.Channels))
	add(KeyLayout, "NCHW")
	add(KeyInterpolation, interpolation(b))
	add(KeyResize, resizeMode(b))
	add(KeyPreprocessing, preprocessing(b))
	keys := make([]string, 0, len(b.Meta))
	for k := range b.Meta {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		add(MetaPrefix+k, b.Meta[k])
	}
	return props, nil
}
