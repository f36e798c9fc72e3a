package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
)

// The model file holds everything prediction needs, in one self-checking file:
//
//	magic    8 bytes  "TAILORM\x00"
//	version  uint32   little-endian, FileVersion
//	hdrLen   uint32   length of the JSON header
//	header   hdrLen bytes of JSON (FileHeader)
//	tensors  float32 little-endian, in header order (parameters, then
//	         BatchNorm means and variances)
//	sha256   32 bytes over everything before it
const (
	FileVersion = 1
	fileMagic   = "TAILORM\x00"
	maxHeader   = 64 << 20
	maxFloats   = 1 << 30
)

// Errors of Read; match with errors.Is.
var (
	ErrNotModel  = errors.New("model: not a tailor model file")
	ErrVersion   = errors.New("model: unsupported model file version")
	ErrTruncated = errors.New("model: file is truncated")
	ErrChecksum  = errors.New("model: checksum mismatch (file is corrupt)")
)

// Bundle is a trained net with what it needs to read images and decide labels.
type Bundle struct {
	Net        *Net
	Labels     []string          // vocabulary, in output order
	Mean, Std  []float32         // per-channel input normalisation, on [0,1] pixels
	Thresholds []float32         // per-label decision thresholds (0.5 if untuned)
	Meta       map[string]string // provenance: run, epoch, validation metrics...
}

// FileHeader is the JSON header of a model file.
type FileHeader struct {
	Format     string            `json:"format"`
	Version    int               `json:"version"`
	Config     Config            `json:"config"`
	Labels     []string          `json:"labels"`
	Mean       []float32         `json:"mean"`
	Std        []float32         `json:"std"`
	Thresholds []float32         `json:"thresholds"`
	Tensors    []TensorEntry     `json:"tensors"`
	Meta       map[string]string `json:"meta,omitempty"`
}

// TensorEntry names one tensor of the file; they follow each other in order.
type TensorEntry struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
}

// Validate checks the bundle is consistent with its net.
func (b *Bundle) Validate() error {
	if b.Net == nil {
		return errors.New("model bundle: no net")
	}
	l, c := b.Net.cfg.Labels, b.Net.cfg.Channels
	if len(b.Labels) != l {
		return fmt.Errorf("model bundle: %d labels for a net with %d outputs", len(b.Labels), l)
	}
	if len(b.Thresholds) != l {
		return fmt.Errorf("model bundle: %d thresholds for %d labels", len(b.Thresholds), l)
	}
	if len(b.Mean) != c || len(b.Std) != c {
		return fmt.Errorf("model bundle: normalisation for %d/%d channels, want %d", len(b.Mean), len(b.Std), c)
	}
	for i, s := range b.Std {
		if !(s > 0) {
			return fmt.Errorf("model bundle: std of channel %d is %g", i, s)
		}
	}
	return nil
}

func (b *Bundle) tensors() ([]TensorEntry, [][]float32) {
	var es []TensorEntry
	var ds [][]float32
	for _, p := range b.Net.params {
		es = append(es, TensorEntry{Name: p.Name, Shape: p.Shape})
		ds = append(ds, p.Data)
	}
	for _, st := range b.Net.BN() {
		es = append(es, TensorEntry{Name: st.Name + "/mean", Shape: []int{len(st.Mean)}}, TensorEntry{Name: st.Name + "/var", Shape: []int{len(st.Variance)}})
		ds = append(ds, st.Mean, st.Variance)
	}
	return es, ds
}

// Write writes the bundle in the model file format.
func (b *Bundle) Write(w io.Writer) error {
	if err := b.Validate(); err != nil {
		return err
	}
	es, ds := b.tensors()
	hdr, err := json.Marshal(FileHeader{Format: "tailor-model", Version: FileVersion, Config: b.Net.cfg, Labels: b.Labels,
		Mean: b.Mean, Std: b.Std, Thresholds: b.Thresholds, Tensors: es, Meta: b.Meta})
	if err != nil {
		return fmt.Errorf("encode model header: %w", err)
	}
	h := sha256.New()
	mw := io.MultiWriter(w, h)
	var pre [16]byte
	copy(pre[:], fileMagic)
	binary.LittleEndian.PutUint32(pre[8:], FileVersion)
	binary.LittleEndian.PutUint32(pre[12:], uint32(len(hdr)))
	if _, err := mw.Write(pre[:]); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	if _, err := mw.Write(hdr); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	for _, d := range ds {
		buf := make([]byte, 4*len(d))
		for i, v := range d {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		if _, err := mw.Write(buf); err != nil {
			return fmt.Errorf("write model: %w", err)
		}
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	return nil
}

// Save writes the bundle to path atomically (a temporary file, then rename).
func (b *Bundle) Save(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := b.Write(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("save model %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save model %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save model %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	return nil
}

// Load reads a model file.
func Load(path string) (*Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	b, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return b, nil
}

// Read reads a model file from r.
func Read(r io.Reader) (*Bundle, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	return Decode(data)
}

// Decode parses a whole model file. It never panics on bad bytes.
func Decode(data []byte) (*Bundle, error) {
	if len(data) < 8 || !bytes.Equal(data[:8], []byte(fileMagic)) {
		return nil, ErrNotModel
	}
	if len(data) < 16 {
		return nil, ErrTruncated
	}
	if v := binary.LittleEndian.Uint32(data[8:]); v != FileVersion {
		return nil, fmt.Errorf("%w %d (this tailor reads version %d)", ErrVersion, v, FileVersion)
	}
	hl := int64(binary.LittleEndian.Uint32(data[12:]))
	if hl > maxHeader {
		return nil, fmt.Errorf("model: header of %d bytes is too large", hl)
	}
	if int64(len(data)) < 16+hl+sha256.Size {
		return nil, ErrTruncated
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		// A short file fails here too; say which when the header tells.
		var hdr FileHeader
		if json.Unmarshal(data[16:16+hl], &hdr) == nil {
			if want, ok := payloadSize(hdr.Tensors); ok && int64(len(body)) < 16+hl+4*want {
				return nil, ErrTruncated
			}
		}
		return nil, ErrChecksum
	}
	var hdr FileHeader
	if err := json.Unmarshal(body[16:16+hl], &hdr); err != nil {
		return nil, fmt.Errorf("model: bad header: %w", err)
	}
	if hdr.Format != "tailor-model" || hdr.Version != FileVersion {
		return nil, fmt.Errorf("model: header says format %q version %d: %w", hdr.Format, hdr.Version, ErrNotModel)
	}
	if err := hdr.Config.Validate(); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	payload := body[16+hl:]
	if want := hdr.Config.NumParams(true); int64(len(payload)) != 4*int64(want) {
		return nil, fmt.Errorf("model: %d bytes of tensors, the architecture needs %d", len(payload), 4*want)
	}
	n, err := New(hdr.Config, 0)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	b := &Bundle{Net: n, Labels: hdr.Labels, Mean: hdr.Mean, Std: hdr.Std, Thresholds: hdr.Thresholds, Meta: hdr.Meta}
	es, ds := b.tensors()
	if len(es) != len(hdr.Tensors) {
		return nil, fmt.Errorf("model: file has %d tensors, the architecture %d", len(hdr.Tensors), len(es))
	}
	off := 0
	for i, e := range hdr.Tensors {
		if e.Name != es[i].Name || !sameShape(e.Shape, es[i].Shape) {
			return nil, fmt.Errorf("model: tensor %d is %s%v, the architecture wants %s%v", i, e.Name, e.Shape, es[i].Name, es[i].Shape)
		}
		for j := range ds[i] {
			ds[i][j] = math.Float32frombits(binary.LittleEndian.Uint32(payload[off:]))
			off += 4
		}
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	return b, nil
}

func payloadSize(es []TensorEntry) (int64, bool) {
	var t int64
	for _, e := range es {
		s := int64(1)
		for _, d := range e.Shape {
			if d < 0 || d > maxFloats {
				return 0, false
			}
			s *= int64(d)
			if s > maxFloats {
				return 0, false
			}
		}
		t += s
		if t > maxFloats {
			return 0, false
		}
	}
	return t, true
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
