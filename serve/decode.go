package serve

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/shard"
)

// httpError is an error with the HTTP status it is answered with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// statusOf is the HTTP status of an error: its own, 413 for a body over the
// limit, 500 otherwise.
func statusOf(err error) int {
	var he *httpError
	if errors.As(err, &he) {
		return he.code
	}
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusInternalServerError
}

// Names of the v2 model's tensors.
const (
	inputTensor  = "input"  // FP32 [N,3,H,W], normalised as the model says
	imagesTensor = "images" // BYTES [N], encoded JPEG, PNG, GIF, WebP or BMP (base64 in JSON)
	outputTensor = "probabilities"
)

// inferRequest is the v2 inference request body.
type inferRequest struct {
	ID         string          `json:"id,omitempty"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Inputs     []requestInput  `json:"inputs"`
	Outputs    []requestOutput `json:"outputs,omitempty"`
}

type requestInput struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data"`
}

type requestOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

// limits bound what one request may hold.
type limits struct {
	maxImages int
	maxPixels int64
}

// decodeInfer parses a v2 inference request for model m into the request
// and its images as normalised floats. Every error is an *httpError (400).
func decodeInfer(body []byte, m *Model, lim limits) (*inferRequest, []float32, int, error) {
	var req inferRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		return nil, nil, 0, errorf(http.StatusBadRequest, "malformed JSON: %v", err)
	}
	if dec.More() {
		return nil, nil, 0, errorf(http.StatusBadRequest, "malformed JSON: data after the request object")
	}
	if len(req.Inputs) != 1 {
		return nil, nil, 0, errorf(http.StatusBadRequest, "%d inputs: want one, %q (FP32 [N,%d,%d,%d]) or %q (BYTES [N])",
			len(req.Inputs), inputTensor, m.channels, m.size, m.size, imagesTensor)
	}
	for _, o := range req.Outputs {
		if o.Name != outputTensor {
			return nil, nil, 0, errorf(http.StatusBadRequest, "unknown output %q: the model has %q", o.Name, outputTensor)
		}
	}
	in := req.Inputs[0]
	for _, d := range in.Shape {
		if d < 0 {
			return nil, nil, 0, errorf(http.StatusBadRequest, "input %q: negative dimension in shape %v", in.Name, in.Shape)
		}
	}
	switch in.Name {
	case inputTensor:
		x, n, err := decodeFP32(in, m, lim)
		return &req, x, n, err
	case imagesTensor:
		x, n, err := decodeBytes(in, m, lim)
		return &req, x, n, err
	}
	return nil, nil, 0, errorf(http.StatusBadRequest, "unknown input %q: want %q (FP32 [N,%d,%d,%d]) or %q (BYTES [N])",
		in.Name, inputTensor, m.channels, m.size, m.size, imagesTensor)
}

func decodeFP32(in requestInput, m *Model, lim limits) ([]float32, int, error) {
	if in.Datatype != "FP32" {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: datatype %q, want FP32", in.Name, in.Datatype)
	}
	s := in.Shape
	if len(s) != 4 || s[1] != int64(m.channels) || s[2] != int64(m.size) || s[3] != int64(m.size) {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: shape %v, want [N,%d,%d,%d]", in.Name, s, m.channels, m.size, m.size)
	}
	if s[0] < 1 || s[0] > int64(lim.maxImages) {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: %d images, want 1 to %d", in.Name, s[0], lim.maxImages)
	}
	n := int(s[0])
	want := n * m.inputLen()
	x, err := flatFloats(in.Data, want)
	if err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: %v", in.Name, err)
	}
	if len(x) != want {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: %d values for shape %v, want %d", in.Name, len(x), s, want)
	}
	return x, n, nil
}

// flatFloats reads tensor data given flat ([1,2,3,4]) or nested as the
// shape ([[1,2],[3,4]]), row-major either way, stopping past max values.
func flatFloats(data json.RawMessage, max int) ([]float32, error) {
	if len(data) == 0 {
		return nil, errors.New("no data")
	}
	var flat []float32
	if err := json.Unmarshal(data, &flat); err == nil {
		return flat, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	out := make([]float32, 0, min(max, 1<<20))
	depth := 0
	for {
		t, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		switch v := t.(type) {
		case json.Delim:
			switch v {
			case '[':
				depth++
			case ']':
				depth--
			default:
				return nil, errors.New("data: want numbers in arrays")
			}
		case json.Number:
			if depth == 0 {
				return nil, errors.New("data: want an array")
			}
			f, err := v.Float64()
			if err != nil || f > 3.4028234663852886e38 || f < -3.4028234663852886e38 {
				return nil, fmt.Errorf("data: %s is not an FP32 value", v)
			}
			if len(out) == max {
				return nil, fmt.Errorf("data: more than %d values", max)
			}
			out = append(out, float32(f))
		default:
			return nil, fmt.Errorf("data: %v is not a number", t)
		}
	}
	if depth != 0 {
		return nil, errors.New("data: unbalanced arrays")
	}
	return out, nil
}

func decodeBytes(in requestInput, m *Model, lim limits) ([]float32, int, error) {
	if in.Datatype != "BYTES" {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: datatype %q, want BYTES", in.Name, in.Datatype)
	}
	if len(in.Shape) != 1 {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: shape %v, want [N]", in.Name, in.Shape)
	}
	if in.Shape[0] < 1 || in.Shape[0] > int64(lim.maxImages) {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: %d images, want 1 to %d", in.Name, in.Shape[0], lim.maxImages)
	}
	var strs []string
	if err := json.Unmarshal(in.Data, &strs); err != nil {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: data: want an array of base64 strings: %v", in.Name, err)
	}
	if int64(len(strs)) != in.Shape[0] {
		return nil, 0, errorf(http.StatusBadRequest, "input %q: %d elements for shape %v", in.Name, len(strs), in.Shape)
	}
	n, il := len(strs), m.inputLen()
	x := make([]float32, n*il)
	for i, s := range strs {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, 0, errorf(http.StatusBadRequest, "input %q: element %d is not base64: %v", in.Name, i, err)
		}
		if err := decodeImage(raw, m, lim, x[i*il:(i+1)*il]); err != nil {
			return nil, 0, errorf(http.StatusBadRequest, "input %q: element %d: %v", in.Name, i, err)
		}
	}
	return x, n, nil
}

// decodeImage decodes an encoded JPEG, PNG, GIF, WebP or BMP as ingest does (resized
// to the model's size) and normalises it into dst. It checks the
// dimensions the header declares before decoding anything.
func decodeImage(data []byte, m *Model, lim limits, dst []float32) error {
	if len(data) == 0 {
		return errors.New("empty image")
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		if errors.Is(err, image.ErrFormat) {
			return errors.New("not a JPEG, PNG, GIF, WebP or BMP image")
		}
		return fmt.Errorf("bad image header: %w", err)
	}
	if cfg.Width < 1 || cfg.Height < 1 {
		return fmt.Errorf("%s declares %dx%d pixels", format, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > lim.maxPixels {
		return fmt.Errorf("%s of %dx%d pixels: over the limit of %d pixels", format, cfg.Width, cfg.Height, lim.maxPixels)
	}
	// as ingest prepared the training images: turned upright, resized the
	// way the model recorded (stretch, pad or crop) with its interpolation
	pix, err := shard.DecodeImageOpts(data, shard.DecodeOptionsFromMeta(m.size, m.Bundle.Meta))
	if err != nil {
		return err
	}
	input.Normalize(dst, pix, m.size, m.size, m.channels, m.Bundle.Mean, m.Bundle.Std)
	return nil
}

// namedImage is one image of a /v1/predict request.
type namedImage struct {
	name string
	data []byte
}

// readImages reads a /v1/predict body: a multipart form whose file parts
// are images, or one raw image.
func readImages(r *http.Request, lim limits) ([]namedImage, error) {
	ct := r.Header.Get("Content-Type")
	mt, params, _ := mime.ParseMediaType(ct)
	if !strings.HasPrefix(mt, "multipart/") {
		data, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, readErr(err)
		}
		return []namedImage{{name: "image", data: data}}, nil
	}
	if params["boundary"] == "" {
		return nil, errorf(http.StatusBadRequest, "multipart body without a boundary")
	}
	return readMultipart(multipart.NewReader(r.Body, params["boundary"]), lim)
}

func readMultipart(mr *multipart.Reader, lim limits) ([]namedImage, error) {
	var out []namedImage
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, readErr(err)
		}
		name := p.FileName()
		if name == "" {
			name = p.FormName()
		}
		data, err := io.ReadAll(p)
		p.Close()
		if err != nil {
			return nil, readErr(err)
		}
		if p.FileName() == "" && len(data) == 0 {
			continue // an empty form field
		}
		if len(out) == lim.maxImages {
			return nil, errorf(http.StatusBadRequest, "more than %d images in one request", lim.maxImages)
		}
		out = append(out, namedImage{name: name, data: data})
	}
	if len(out) == 0 {
		return nil, errorf(http.StatusBadRequest, "no images in the form")
	}
	return out, nil
}

// readErr keeps a body-limit error (413) and makes others 400.
func readErr(err error) error {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return errorf(http.StatusRequestEntityTooLarge, "request body over %d bytes", mb.Limit)
	}
	return errorf(http.StatusBadRequest, "reading the body: %v", err)
}
