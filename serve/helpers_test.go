package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
)

// testSize is the side of the test nets' input: small, so tests are fast.
const testSize = 16

var testLabels = []string{"red", "blue", "dress", "shirt"}

// testModelFile is a small real model file whose weights come from seed.
func testModelFile(tb testing.TB, seed uint64) []byte {
	tb.Helper()
	cfg := model.DefaultConfig(testSize, len(testLabels))
	cfg.Dense = 32
	net, err := model.New(cfg, seed)
	if err != nil {
		tb.Fatal(err)
	}
	// BatchNorm statistics away from (0, 1), so they matter
	for i, st := range net.BN() {
		for c := range st.Mean {
			st.Mean[c] = 0.01 * float32((c+i)%7)
			st.Variance[c] = 0.5 + 0.1*float32((c*3+i)%5)
		}
	}
	b := &model.Bundle{Net: net, Labels: testLabels, Mean: []float32{0.5, 0.4, 0.3}, Std: []float32{0.25, 0.2, 0.3},
		Thresholds: []float32{0.5, 0.45, 0.55, 0.5}, Meta: map[string]string{"epoch": fmt.Sprint(seed), "run": "test"}}
	var buf bytes.Buffer
	if err := b.Write(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func testModel(tb testing.TB, seed uint64) *Model {
	tb.Helper()
	m, err := DecodeModel(testModelFile(tb, seed))
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// reference computes what model file data predicts for the normalised
// inputs x of n images, one image at a time on a net of its own.
func reference(tb testing.TB, data []byte, x []float32, n int) []float32 {
	tb.Helper()
	b, err := model.Decode(data)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := b.Net.Config()
	il := cfg.InputLen()
	out := make([]float32, n*cfg.Labels)
	for i := range n {
		if err := b.Net.Predict(x[i*il:(i+1)*il], 1, out[i*cfg.Labels:(i+1)*cfg.Labels]); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// normalised is an encoded image as the model file data reads it.
func normalised(tb testing.TB, data, img []byte) []float32 {
	tb.Helper()
	b, err := model.Decode(data)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := b.Net.Config()
	pix, err := shard.DecodeImage(img, cfg.Size, b.Meta["interpolation"])
	if err != nil {
		tb.Fatal(err)
	}
	x := make([]float32, cfg.InputLen())
	input.Normalize(x, pix, cfg.Size, cfg.Size, cfg.Channels, b.Mean, b.Std)
	return x
}

// testPNG is a w×h PNG whose pixels come from seed.
func testPNG(tb testing.TB, w, h int, seed int) []byte {
	tb.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x*17 + seed*31), uint8(y*13 + seed*7), uint8((x + y + seed) * 5), 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// pngHeader is a PNG signature and IHDR chunk claiming a w×h RGBA image.
func pngHeader(w, h uint32) []byte {
	ihdr := binary.BigEndian.AppendUint32([]byte("IHDR"), w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0)
	b := []byte("\x89PNG\r\n\x1a\n")
	b = binary.BigEndian.AppendUint32(b, 13)
	b = append(b, ihdr...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(ihdr))
}

func testConfig(tb testing.TB) Config {
	tb.Helper()
	c := DefaultConfig()
	c.Name = "fashion"
	c.MaxBatch = 8
	c.RequestTimeout = 20 * time.Second
	c.ShutdownTimeout = 10 * time.Second
	c.Recheck = 0
	return c
}

// running is a server serving on a loopback port.
type running struct {
	s    *Server
	url  string
	stop func() error // cancels Serve and returns what it returned
}

func startServer(tb testing.TB, cfg Config, m *Model) *running {
	tb.Helper()
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	if m != nil {
		if err := s.SetModel(m); err != nil {
			tb.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, ln) }()
	var once bool
	var serr error
	stop := func() error {
		if !once {
			once = true
			cancel()
			serr = <-errc
		}
		return serr
	}
	tb.Cleanup(func() { _ = stop() })
	return &running{s: s, url: "http://" + ln.Addr().String(), stop: stop}
}

// do sends a request and decodes a JSON answer into out (if not nil).
func do(tb testing.TB, method, url, ctype string, body []byte, out any) (int, http.Header) {
	tb.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			tb.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode, resp.Header
}

func fp32Request(x []float32, n int) []byte {
	b, _ := json.Marshal(map[string]any{"id": "r1", "inputs": []map[string]any{{"name": "input", "datatype": "FP32",
		"shape": []int{n, 3, testSize, testSize}, "data": x}}})
	return b
}

func bytesRequest(imgs ...[]byte) []byte {
	var s []string
	for _, im := range imgs {
		s = append(s, base64.StdEncoding.EncodeToString(im))
	}
	b, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "images", "datatype": "BYTES", "shape": []int{len(s)}, "data": s}}})
	return b
}

// close reports whether got and want agree within tol.
func closeTo(got, want []float32, tol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d values, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > tol {
			return fmt.Errorf("value %d is %g, want %g", i, got[i], want[i])
		}
	}
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type httpClient struct{}

func (httpClient) get(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
