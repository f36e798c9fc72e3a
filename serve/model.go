package serve

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/tailorml/tailor/model"
)

// Model is one loaded model file: its net, what it needs to read images and
// decide labels, and its version. Once published to a server, only the
// server's batch goroutine runs its net.
type Model struct {
	Bundle *model.Bundle
	// Version names the file's contents: the first 12 hex digits of the
	// SHA-256 the file ends with, so the same file is the same version on
	// every server and after restarts.
	Version string
	Source  string // where it was read from
	Loaded  time.Time

	size, channels, labels int
	buckets                []int // batch sizes the net runs (graphs built once)
}

// ErrNoModel means no model is loaded yet (a run without a best model).
var ErrNoModel = errors.New("serve: no model loaded yet")

// LoadModelFile reads and checks a model file.
func LoadModelFile(path string) (*Model, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("serve: read model: %w", err)
	}
	m, err := DecodeModel(data)
	if err != nil {
		return nil, fmt.Errorf("serve: model %s: %w", path, err)
	}
	m.Source = path
	return m, nil
}

// DecodeModel parses a whole model file.
func DecodeModel(data []byte) (*Model, error) {
	b, err := model.Decode(data)
	if err != nil {
		return nil, err
	}
	return NewModel(b, fileVersion(data))
}

// fileVersion is the version of a model file's bytes: its trailing SHA-256
// (which model.Decode verifies), or the hash of the bytes if too short.
func fileVersion(data []byte) string {
	if len(data) >= sha256.Size {
		return hex.EncodeToString(data[len(data)-sha256.Size:])[:12]
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])[:12]
}

// NewModel wraps a bundle under a version name.
func NewModel(b *model.Bundle, version string) (*Model, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if version == "" {
		return nil, errors.New("serve: model without a version")
	}
	cfg := b.Net.Config()
	if cfg.Channels != 3 {
		return nil, fmt.Errorf("serve: model takes %d channels, images have 3", cfg.Channels)
	}
	return &Model{Bundle: b, Version: version, Loaded: time.Now(), size: cfg.Size, channels: cfg.Channels, labels: cfg.Labels}, nil
}

// inputLen is the floats of one image.
func (m *Model) inputLen() int { return m.channels * m.size * m.size }

// prepare fixes the batch sizes the net will run for batches of up to
// maxBatch images and builds their graphs by running each once, so that no
// request pays for building one. Call it before the model is published.
func (m *Model) prepare(maxBatch int) error {
	m.buckets = buckets(maxBatch)
	for _, n := range m.buckets {
		if err := m.Bundle.Net.Predict(make([]float32, n*m.inputLen()), n, make([]float32, n*m.labels)); err != nil {
			return fmt.Errorf("serve: warm up batch %d: %w", n, err)
		}
	}
	return nil
}

// buckets are the batch sizes run: powers of two below max, and max.
func buckets(max int) []int {
	var b []int
	for n := 1; n < max; n *= 2 {
		b = append(b, n)
	}
	return append(b, max)
}

// chunk is the batch size to run for the first of r remaining images (the
// images are padded with zeros up to it when it is more than r): the
// largest bucket not above r, or the next one up if padding to it wastes at
// most a quarter of it.
func chunk(buckets []int, r int) int {
	lo := buckets[0]
	for _, b := range buckets {
		if b <= r {
			lo = b
			continue
		}
		if 4*(b-r) <= b {
			return b
		}
		break
	}
	return lo
}

// predict runs n images (x, n·inputLen floats) and writes n·labels
// probabilities into out, in chunks of the prepared batch sizes. Only the
// batch goroutine calls it.
func (m *Model) predict(x []float32, n int, out []float32) error {
	il, l := m.inputLen(), m.labels
	var pad []float32
	for i := 0; i < n; {
		c := chunk(m.buckets, n-i)
		take := min(c, n-i)
		in := x[i*il : (i+take)*il]
		dst := out[i*l : (i+take)*l]
		if take < c { // pad to a prepared size
			if cap(pad) < c*il {
				pad = make([]float32, c*il)
			}
			pad = pad[:c*il]
			copy(pad, in)
			clear(pad[take*il:])
			in = pad
			dst = make([]float32, c*l)
		}
		if err := m.Bundle.Net.Predict(in, c, dst); err != nil {
			return err
		}
		if take < c {
			copy(out[i*l:(i+take)*l], dst)
		}
		i += take
	}
	return nil
}

// parameters are the model's labels, thresholds and input in the v2
// metadata's parameters.
func (m *Model) parameters() map[string]any {
	th := make([]float64, len(m.Bundle.Thresholds))
	for i, t := range m.Bundle.Thresholds {
		th[i] = float64(t)
	}
	p := map[string]any{
		"labels": m.Bundle.Labels, "thresholds": th, "size": m.size,
		"mean": m.Bundle.Mean, "std": m.Bundle.Std, "layout": "NCHW",
		"normalisation": "x = (pixel/255 - mean[c]) / std[c]",
	}
	for _, k := range []string{"run", "epoch", "interpolation"} {
		if v, ok := m.Bundle.Meta[k]; ok {
			p[k] = v
		}
	}
	if e, err := strconv.Atoi(m.Bundle.Meta["epoch"]); err == nil {
		p["epoch"] = e
	}
	return p
}
