package onnxexport_test

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/onnxexport"
)

// testBundle is a net of the given input size with random weights and
// non-trivial BatchNorm parameters and statistics (so that every term of
// the inference arithmetic matters), and per-channel normalisation that
// differs between channels.
func testBundle(t *testing.T, size, labels int, seed uint64) *model.Bundle {
	t.Helper()
	net, err := model.New(model.DefaultConfig(size, labels), seed)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 77))
	for _, p := range net.Params() {
		switch {
		case strings.HasSuffix(p.Name, "gamma"):
			for i := range p.Data {
				// some negative scales: max-pooling after a BatchNorm with
				// a negative scale is not the BatchNorm of the max
				p.Data[i] = float32(0.5 + rng.Float64())
				if rng.IntN(8) == 0 {
					p.Data[i] = -p.Data[i]
				}
			}
		case strings.HasSuffix(p.Name, "beta") || strings.HasSuffix(p.Name, "/b"):
			for i := range p.Data {
				p.Data[i] = float32(0.2 * rng.NormFloat64())
			}
		}
	}
	for _, st := range net.BN() {
		for i := range st.Mean {
			st.Mean[i] = float32(0.3 * rng.NormFloat64())
			st.Variance[i] = float32(0.3 + 2*rng.Float64())
		}
	}
	b := &model.Bundle{Net: net, Mean: []float32{0.49, 0.42, 0.37}, Std: []float32{0.22, 0.27, 0.31},
		Meta: map[string]string{"interpolation": "bilinear", "epoch": "3", "val_map": "0.61234"}}
	for i := range labels {
		b.Labels = append(b.Labels, "label"+strconv.Itoa(i))
		b.Thresholds = append(b.Thresholds, float32(0.3+0.05*float64(i)))
	}
	return b
}

func decode(t *testing.T, data []byte) *onnx.ModelProto {
	t.Helper()
	var m onnx.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode the exported model: %v", err)
	}
	return &m
}

func props(m *onnx.ModelProto) map[string]string {
	out := map[string]string{}
	for _, p := range m.MetadataProps {
		out[p.Key] = p.Value
	}
	return out
}

func attrs(n *onnx.NodeProto) map[string]*onnx.AttributeProto {
	out := map[string]*onnx.AttributeProto{}
	for _, a := range n.Attribute {
		out[a.Name] = a
	}
	return out
}

func dims(v *onnx.ValueInfoProto) []string {
	var out []string
	for _, d := range v.GetType().GetTensorType().GetShape().GetDim() {
		if p := d.GetDimParam(); p != "" {
			out = append(out, p)
		} else {
			out = append(out, strconv.FormatInt(d.GetDimValue(), 10))
		}
	}
	return out
}

// TestModelGraph decodes the exported bytes and checks the graph against
// the net: versions, input and output, the exact node sequence with its
// attributes, that every node reads only what exists before it, and that
// every initializer holds the model's tensor bit for bit.
func TestModelGraph(t *testing.T) {
	const size, labels = 64, 5
	b := testBundle(t, size, labels, 1)
	data, err := onnxexport.Marshal(b, onnxexport.Options{ProducerVersion: "v9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, data)
	if m.IrVersion != 7 || len(m.OpsetImport) != 1 || m.OpsetImport[0].Version != 13 || m.OpsetImport[0].Domain != "" {
		t.Errorf("ir_version %d, opsets %v: want 7 and the default domain at 13", m.IrVersion, m.OpsetImport)
	}
	if m.ProducerName != "tailor" || m.ProducerVersion != "v9.9.9" {
		t.Errorf("producer %q %q, want tailor v9.9.9", m.ProducerName, m.ProducerVersion)
	}
	g := m.Graph
	if len(g.Input) != 1 || g.Input[0].Name != onnxexport.InputName || !slices.Equal(dims(g.Input[0]), []string{"batch", "3", "64", "64"}) {
		t.Errorf("inputs %v, want images [batch 3 64 64]", g.Input)
	}
	if len(g.Output) != 1 || g.Output[0].Name != onnxexport.OutputName || !slices.Equal(dims(g.Output[0]), []string{"batch", "5"}) {
		t.Errorf("outputs %v, want probabilities [batch 5]", g.Output)
	}
	for _, v := range append(g.Input, g.Output...) {
		if et := v.GetType().GetTensorType().GetElemType(); et != int32(onnx.TensorProto_FLOAT) {
			t.Errorf("%s: element type %d, want float", v.Name, et)
		}
	}

	var ops []string
	for _, n := range g.Node {
		ops = append(ops, n.OpType)
	}
	block := []string{"Conv", "Relu", "BatchNormalization"}
	var want []string
	for _, pool := range []bool{true, false, true, false, true} {
		want = append(want, block...)
		if pool {
			want = append(want, "MaxPool")
		}
	}
	want = append(want, "Flatten", "Gemm", "Relu", "BatchNormalization", "Gemm", "Sigmoid")
	if !slices.Equal(ops, want) {
		t.Fatalf("nodes:\n%v\nwant\n%v", ops, want)
	}

	inits := map[string]*onnx.TensorProto{}
	for _, in := range g.Initializer {
		if inits[in.Name] != nil {
			t.Errorf("initializer %s twice", in.Name)
		}
		inits[in.Name] = in
	}
	known := map[string]bool{onnxexport.InputName: true}
	for name := range inits {
		known[name] = true
	}
	var pools [][]int64
	for _, n := range g.Node {
		for _, in := range n.Input {
			if !known[in] {
				t.Errorf("node %s reads %q before anything writes it", n.Name, in)
			}
		}
		for _, out := range n.Output {
			known[out] = true
		}
		a := attrs(n)
		switch n.OpType {
		case "Conv":
			if !slices.Equal(a["pads"].GetInts(), []int64{1, 1, 1, 1}) || !slices.Equal(a["kernel_shape"].GetInts(), []int64{3, 3}) ||
				!slices.Equal(a["strides"].GetInts(), []int64{1, 1}) || len(n.Input) != 3 {
				t.Errorf("conv %s: %v with %d inputs, want 3×3, pads 1, stride 1 and a bias", n.Name, n.Attribute, len(n.Input))
			}
		case "MaxPool":
			k := a["kernel_shape"].GetInts()
			if !slices.Equal(a["strides"].GetInts(), k) || !slices.Equal(a["pads"].GetInts(), []int64{0, 0, 0, 0}) {
				t.Errorf("maxpool %s: %v, want stride = window, no padding", n.Name, n.Attribute)
			}
			pools = append(pools, k)
		case "BatchNormalization":
			if f := a["epsilon"].GetF(); f != float32(1e-3) || len(n.Input) != 5 || len(n.Output) != 1 {
				t.Errorf("batchnorm %s: epsilon %g, %d inputs, %d outputs, want 1e-3, 5, 1", n.Name, f, len(n.Input), len(n.Output))
			}
		case "Gemm":
			for _, k := range []string{"transA", "transB"} {
				if a[k].GetI() != 0 {
					t.Errorf("gemm %s: %s %d, want 0 (weights are stored in×out)", n.Name, k, a[k].GetI())
				}
			}
		case "Flatten":
			if a["axis"].GetI() != 1 {
				t.Errorf("flatten axis %d, want 1", a["axis"].GetI())
			}
		}
	}
	if want := [][]int64{{3, 3}, {2, 2}, {2, 2}}; !slices.EqualFunc(pools, want, slices.Equal) {
		t.Errorf("pool windows %v, want %v", pools, want)
	}
	if !known[onnxexport.OutputName] {
		t.Errorf("no node writes %s", onnxexport.OutputName)
	}

	check := func(name string, shape []int, d []float32) {
		t.Helper()
		in := inits[onnxexport.InitializerName(name)]
		if in == nil {
			t.Errorf("no initializer for %s", name)
			return
		}
		var s []int
		for _, v := range in.Dims {
			s = append(s, int(v))
		}
		if !slices.Equal(s, shape) || in.DataType != int32(onnx.TensorProto_FLOAT) || len(in.RawData) != 4*len(d) {
			t.Errorf("%s: dims %v type %d, %d bytes; want %v float, %d bytes", name, s, in.DataType, len(in.RawData), shape, 4*len(d))
			return
		}
		for i, v := range d {
			if got := math.Float32frombits(binary.LittleEndian.Uint32(in.RawData[4*i:])); math.Float32bits(got) != math.Float32bits(v) {
				t.Errorf("%s[%d] = %g, want %g", name, i, got, v)
				return
			}
		}
		delete(inits, in.Name)
	}
	for _, p := range b.Net.Params() {
		check(p.Name, p.Shape, p.Data)
	}
	for _, st := range b.Net.BN() {
		check(st.Name+"/mean", []int{len(st.Mean)}, st.Mean)
		check(st.Name+"/var", []int{len(st.Variance)}, st.Variance)
	}
	for name := range inits {
		t.Errorf("initializer %s is no tensor of the model", name)
	}
	if flat := b.Net.Config().FinalSide(); flat != 5 {
		t.Errorf("final side %d at 64 px, want 5", flat)
	}

	// the same bundle gives the same bytes
	again, err := onnxexport.Marshal(b, onnxexport.Options{ProducerVersion: "v9.9.9"})
	if err != nil || string(again) != string(data) {
		t.Errorf("a second export differs (%v)", err)
	}
}

// TestMetadata checks metadata_props: the vocabulary, the thresholds and
// how to prepare an image, from what the model file says.
func TestMetadata(t *testing.T) {
	tests := []struct {
		name   string
		size   int
		meta   map[string]string
		interp string
		resize string
	}{
		{"bilinear model", 32, map[string]string{"interpolation": "bilinear", "run": "r1"}, "bilinear", "stretch"},
		{"no interpolation recorded: tailor's default", 24, map[string]string{"epoch": "2"}, "catmullrom", "stretch"},
		{"no provenance at all", 48, nil, "catmullrom", "stretch"},
		{"a padded model", 32, map[string]string{"resize": "pad"}, "catmullrom", "pad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBundle(t, tt.size, 4, 2)
			b.Meta = tt.meta
			data, err := onnxexport.Marshal(b, onnxexport.Options{})
			if err != nil {
				t.Fatal(err)
			}
			p := props(decode(t, data))
			var labels []string
			var thr, mean, std []float32
			for key, into := range map[string]any{onnxexport.KeyLabels: &labels, onnxexport.KeyThresholds: &thr, onnxexport.KeyMean: &mean, onnxexport.KeyStd: &std} {
				if err := json.Unmarshal([]byte(p[key]), into); err != nil {
					t.Errorf("%s = %q: %v", key, p[key], err)
				}
			}
			if !slices.Equal(labels, b.Labels) || !slices.Equal(thr, b.Thresholds) || !slices.Equal(mean, b.Mean) || !slices.Equal(std, b.Std) {
				t.Errorf("labels %v thresholds %v mean %v std %v; want %v %v %v %v", labels, thr, mean, std, b.Labels, b.Thresholds, b.Mean, b.Std)
			}
			want := map[string]string{
				onnxexport.KeySize: strconv.Itoa(tt.size), onnxexport.KeyChannels: "3", onnxexport.KeyChannelOrder: "RGB",
				onnxexport.KeyLayout: "NCHW", onnxexport.KeyInterpolation: tt.interp, onnxexport.KeyResize: tt.resize,
			}
			for k, v := range tt.meta {
				want["tailor."+k] = v
			}
			for k, v := range want {
				if p[k] != v {
					t.Errorf("%s = %q, want %q", k, p[k], v)
				}
			}
			if s, err := strconv.ParseFloat(p[onnxexport.KeyScale], 64); err != nil || math.Abs(s*255-1) > 1e-15 {
				t.Errorf("%s = %q, want 1/255", onnxexport.KeyScale, p[onnxexport.KeyScale])
			}
			if pre := p[onnxexport.KeyPreprocessing]; !strings.Contains(pre, tt.interp) || !strings.Contains(pre, strconv.Itoa(tt.size)+"×") {
				t.Errorf("%s = %q: does not name the size and interpolation", onnxexport.KeyPreprocessing, pre)
			}
			var n int
			for k := range p {
				if strings.HasPrefix(k, "tailor.") {
					n++
				}
			}
			if n != len(tt.meta) {
				t.Errorf("%d provenance entries, want %d", n, len(tt.meta))
			}
		})
	}
}

// TestModelRefusesBadBundles: a bundle that is not consistent is an error,
// not a broken file.
func TestModelRefusesBadBundles(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(b *model.Bundle)
		want  string
	}{
		{"no net", func(b *model.Bundle) { b.Net = nil }, "no net"},
		{"labels missing", func(b *model.Bundle) { b.Labels = b.Labels[:2] }, "labels for a net with"},
		{"thresholds missing", func(b *model.Bundle) { b.Thresholds = nil }, "thresholds for"},
		{"std zero", func(b *model.Bundle) { b.Std[1] = 0 }, "std of channel 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBundle(t, 24, 3, 3)
			tt.spoil(b)
			_, err := onnxexport.Marshal(b, onnxexport.Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "export onnx: ") {
				t.Errorf("error %v, want one starting with %q and saying %q", err, "export onnx: ", tt.want)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	b := testBundle(t, 24, 3, 4)
	path := filepath.Join(t.TempDir(), "m.onnx")
	n, err := onnxexport.WriteFile(path, b, onnxexport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := onnxexport.Marshal(b, onnxexport.Options{})
	if n != len(data) || string(data) != string(want) {
		t.Errorf("file of %d bytes (reported %d), want the %d bytes Marshal returns", len(data), n, len(want))
	}
	if fi, err := os.Stat(path); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o644 {
		t.Errorf("file mode %v, want -rw-r--r--", fi.Mode())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("folder holds %d entries, want only the model (no temporary file left)", len(entries))
	}
	if _, err := onnxexport.WriteFile(filepath.Join(t.TempDir(), "absent", "m.onnx"), b, onnxexport.Options{}); err == nil {
		t.Error("writing into a missing folder succeeded")
	}
}
