package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" for none
	}{
		{"default", func(*Config) {}, ""},
		{"no name", func(c *Config) { c.Name = "" }, "name"},
		{"batch 0", func(c *Config) { c.MaxBatch = 0 }, "max batch"},
		{"negative delay", func(c *Config) { c.MaxDelay = -time.Millisecond }, "max delay"},
		{"no queue", func(c *Config) { c.QueueDepth = 0 }, "queue depth"},
		{"no images", func(c *Config) { c.MaxImages = 0 }, "max images"},
		{"tiny body", func(c *Config) { c.MaxBodyBytes = 10 }, "max body"},
		{"no pixels", func(c *Config) { c.MaxImagePixels = 0 }, "pixels"},
		{"no timeout", func(c *Config) { c.RequestTimeout = 0 }, "timeout"},
		{"negative recheck", func(c *Config) { c.Recheck = -1 }, "recheck"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v, want ErrConfig mentioning %q", err, tt.want)
			}
		})
	}
}

func TestChunk(t *testing.T) {
	b := buckets(32)
	if got, want := fmt.Sprint(b), "[1 2 4 8 16 32]"; got != want {
		t.Fatalf("buckets(32) = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(buckets(1)), "[1]"; got != want {
		t.Fatalf("buckets(1) = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(buckets(24)), "[1 2 4 8 16 24]"; got != want {
		t.Fatalf("buckets(24) = %s, want %s", got, want)
	}
	tests := []struct{ r, want int }{
		{1, 1}, {2, 2}, {3, 4}, {5, 4}, {7, 8}, {11, 8}, {12, 16}, {13, 16}, {20, 16}, {24, 32}, {31, 32}, {32, 32}, {100, 32},
	}
	for _, tt := range tests {
		if got := chunk(b, tt.r); got != tt.want {
			t.Errorf("chunk(%d) = %d, want %d", tt.r, got, tt.want)
		}
	}
}

// Every batch size, padded or cut into chunks, gives each image what the
// net gives it alone.
func TestModelPredictChunks(t *testing.T) {
	data := testModelFile(t, 1)
	m, err := DecodeModel(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.prepare(8); err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 13*m.inputLen())
	for i := range x {
		x[i] = float32(i%97)/50 - 1
	}
	want := reference(t, data, x, 13)
	for _, n := range []int{1, 3, 5, 8, 13} {
		out := make([]float32, n*m.labels)
		if err := m.predict(x[:n*m.inputLen()], n, out); err != nil {
			t.Fatal(err)
		}
		if err := closeTo(out, want[:n*m.labels], 1e-5); err != nil {
			t.Errorf("%d images: %v", n, err)
		}
	}
}

func TestEndpoints(t *testing.T) {
	data := testModelFile(t, 1)
	m, err := DecodeModel(data)
	if err != nil {
		t.Fatal(err)
	}
	r := startServer(t, testConfig(t), m)
	base := r.url

	var live, ready map[string]bool
	if code, _ := do(t, "GET", base+"/v2/health/live", "", nil, &live); code != 200 || !live["live"] {
		t.Errorf("live: %d %v", code, live)
	}
	if code, _ := do(t, "GET", base+"/v2/health/ready", "", nil, &ready); code != 200 || !ready["ready"] {
		t.Errorf("ready: %d %v", code, ready)
	}
	var srv map[string]any
	if code, _ := do(t, "GET", base+"/v2", "", nil, &srv); code != 200 || srv["name"] != "tailor" || srv["extensions"] == nil {
		t.Errorf("server metadata: %d %v", code, srv)
	}
	var meta struct {
		Name     string   `json:"name"`
		Versions []string `json:"versions"`
		Inputs   []struct {
			Name, Datatype string
			Shape          []int
		} `json:"inputs"`
		Outputs []struct {
			Name  string
			Shape []int
		} `json:"outputs"`
		Parameters struct {
			Labels     []string  `json:"labels"`
			Thresholds []float32 `json:"thresholds"`
		} `json:"parameters"`
	}
	if code, _ := do(t, "GET", base+"/v2/models/fashion", "", nil, &meta); code != 200 {
		t.Fatalf("model metadata: %d", code)
	}
	if meta.Name != "fashion" || fmt.Sprint(meta.Versions) != "["+m.Version+"]" || len(meta.Inputs) != 2 ||
		fmt.Sprint(meta.Inputs[0].Shape) != "[-1 3 16 16]" || fmt.Sprint(meta.Outputs[0].Shape) != "[-1 4]" ||
		fmt.Sprint(meta.Parameters.Labels) != fmt.Sprint(testLabels) || fmt.Sprint(meta.Parameters.Thresholds) != "[0.5 0.45 0.55 0.5]" {
		t.Errorf("model metadata: %+v", meta)
	}
	for _, p := range []string{"/v2/models/fashion/ready", "/v2/models/fashion/versions/" + m.Version + "/ready"} {
		if code, _ := do(t, "GET", base+p, "", nil, nil); code != 200 {
			t.Errorf("%s: %d, want 200", p, code)
		}
	}

	// FP32: two images, as the net predicts them one by one
	x := make([]float32, 2*m.inputLen())
	for i := range x {
		x[i] = float32(i%31)/15 - 1
	}
	var inf inferResponse
	if code, _ := do(t, "POST", base+"/v2/models/fashion/infer", "application/json", fp32Request(x, 2), &inf); code != 200 {
		t.Fatalf("infer FP32: %d", code)
	}
	if inf.ModelName != "fashion" || inf.ModelVersion != m.Version || inf.ID != "r1" || len(inf.Outputs) != 1 ||
		inf.Outputs[0].Name != "probabilities" || fmt.Sprint(inf.Outputs[0].Shape) != "[2 4]" || inf.Outputs[0].Datatype != "FP32" {
		t.Errorf("infer FP32 answer: %+v", inf)
	}
	if err := closeTo(inf.Outputs[0].Data, reference(t, data, x, 2), 1e-5); err != nil {
		t.Errorf("infer FP32: %v", err)
	}
	// nested data, as the shape, is the same tensor
	nested := make([][][][]float32, 2)
	for i := range nested {
		nested[i] = make([][][]float32, 3)
		for c := range 3 {
			nested[i][c] = make([][]float32, testSize)
			for y := range testSize {
				off := ((i*3+c)*testSize + y) * testSize
				nested[i][c][y] = x[off : off+testSize]
			}
		}
	}
	body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "input", "datatype": "FP32", "shape": []int{2, 3, testSize, testSize}, "data": nested}}})
	var infNested inferResponse
	if code, _ := do(t, "POST", base+"/v2/models/fashion/versions/"+m.Version+"/infer", "application/json", body, &infNested); code != 200 {
		t.Fatalf("infer nested FP32: %d", code)
	}
	if err := closeTo(infNested.Outputs[0].Data, inf.Outputs[0].Data, 0); err != nil {
		t.Errorf("nested FP32: %v", err)
	}

	// BYTES: encoded images, decoded and resized as ingest does
	img1, img2 := testPNG(t, 40, 30, 1), testPNG(t, 20, 20, 2)
	want := reference(t, data, append(normalised(t, data, img1), normalised(t, data, img2)...), 2)
	var infB inferResponse
	if code, _ := do(t, "POST", base+"/v2/models/fashion/infer", "application/json", bytesRequest(img1, img2), &infB); code != 200 {
		t.Fatalf("infer BYTES: %d", code)
	}
	if err := closeTo(infB.Outputs[0].Data, want, 1e-5); err != nil {
		t.Errorf("infer BYTES: %v", err)
	}

	// /v1/predict: a raw body, and a form of two images
	var pr PredictResponse
	if code, _ := do(t, "POST", base+"/v1/predict", "image/png", img1, &pr); code != 200 || len(pr.Predictions) != 1 {
		t.Fatalf("predict raw: %d %+v", code, pr)
	}
	checkPrediction(t, pr.Predictions[0], want[:4], m)
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	for i, im := range [][]byte{img1, img2} {
		fw, _ := mw.CreateFormFile("image", fmt.Sprintf("p%d.png", i))
		_, _ = fw.Write(im)
	}
	mw.Close()
	var pf PredictResponse
	if code, _ := do(t, "POST", base+"/v1/predict", mw.FormDataContentType(), form.Bytes(), &pf); code != 200 || len(pf.Predictions) != 2 {
		t.Fatalf("predict form: %d %+v", code, pf)
	}
	if pf.Predictions[1].Image != "p1.png" || pf.ModelVersion != m.Version {
		t.Errorf("predict form: %+v", pf)
	}
	checkPrediction(t, pf.Predictions[0], want[:4], m)
	checkPrediction(t, pf.Predictions[1], want[4:], m)

	// the page, and the metrics
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "v1/predict") || strings.Contains(string(page), "http://") || strings.Contains(string(page), "https://") {
		t.Errorf("page: %d, %d bytes, want 200 and no external assets", resp.StatusCode, len(page))
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`tailor_serve_requests_total{code="200",handler="infer"} 3`, "tailor_serve_request_seconds_bucket", "tailor_serve_batch_size_bucket",
		"tailor_serve_queue_depth 0", `tailor_serve_model_info{version="` + m.Version + `"} 1`, "tailor_serve_images_total 9"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// checkPrediction checks a /v1/predict answer against probabilities.
func checkPrediction(t *testing.T, p ImagePrediction, probs []float32, m *Model) {
	t.Helper()
	if len(p.Labels) != len(testLabels) {
		t.Fatalf("%d labels, want %d", len(p.Labels), len(testLabels))
	}
	var present []string
	for i, l := range p.Labels {
		if i > 0 && l.Probability > p.Labels[i-1].Probability {
			t.Errorf("labels not highest first: %+v", p.Labels)
		}
		k := -1
		for j, name := range testLabels {
			if name == l.Label {
				k = j
			}
		}
		if k < 0 {
			t.Fatalf("unknown label %q", l.Label)
		}
		if err := closeTo([]float32{l.Probability}, probs[k:k+1], 1e-5); err != nil {
			t.Errorf("%s: %v", l.Label, err)
		}
		th := m.Bundle.Thresholds[k]
		if l.Threshold != th || l.Present != (l.Probability >= th) {
			t.Errorf("%s: threshold %g present %v (probability %g, want threshold %g)", l.Label, l.Threshold, l.Present, l.Probability, th)
		}
		if l.Present {
			present = append(present, l.Label)
		}
	}
	if fmt.Sprint(present) != fmt.Sprint(p.Present) {
		t.Errorf("present %v, want %v", p.Present, present)
	}
}

// Bad input gets a clear 4xx with {"error": ...}, and the server goes on
// serving.
func TestBadInput(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBodyBytes = 64 << 10
	cfg.MaxImages = 4
	m := testModel(t, 1)
	r := startServer(t, cfg, m)
	good := testPNG(t, 24, 24, 3)
	fp := func(shape []int, dtype string, data any) []byte {
		b, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "input", "datatype": dtype, "shape": shape, "data": data}}})
		return b
	}
	zeros := make([]float32, m.inputLen())
	infer := "/v2/models/fashion/infer"
	tests := []struct {
		name, path, ctype string
		body              []byte
		code              int
		want              string // in the error
	}{
		{"not an image", "/v1/predict", "image/png", []byte("hello, world"), 400, "not a JPEG, PNG, GIF, WebP or BMP"},
		{"empty body", "/v1/predict", "image/png", nil, 400, "empty image"},
		{"truncated image", "/v1/predict", "image/png", good[:len(good)/2], 400, "image"},
		{"decompression bomb", "/v1/predict", "image/png", pngHeader(100_000, 100_000), 400, "over the limit"},
		{"bomb as BYTES", infer, "application/json", bytesRequest(pngHeader(60_000, 60_000)), 400, "over the limit"},
		{"oversized body", "/v1/predict", "image/png", make([]byte, 100<<10), 413, "over 65536 bytes"},
		{"oversized JSON", infer, "application/json", fp([]int{1, 3, 16, 16}, "FP32", make([]float32, 40_000)), 413, "over"},
		{"malformed JSON", infer, "application/json", []byte(`{"inputs": [`), 400, "malformed JSON"},
		{"trailing JSON", infer, "application/json", []byte(`{"inputs": []} {}`), 400, "malformed JSON"},
		{"no inputs", infer, "application/json", []byte(`{"inputs": []}`), 400, "0 inputs"},
		{"unknown input", infer, "application/json", []byte(`{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}`), 400, "unknown input"},
		{"unknown output", infer, "application/json", []byte(`{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": [{"name": "logits"}]}`), 400, "unknown output"},
		{"wrong datatype", infer, "application/json", fp([]int{1, 3, 16, 16}, "INT32", zeros), 400, "datatype"},
		{"wrong shape", infer, "application/json", fp([]int{1, 3, 32, 32}, "FP32", zeros), 400, "shape"},
		{"negative shape", infer, "application/json", fp([]int{-1, 3, 16, 16}, "FP32", zeros), 400, "negative"},
		{"too many images", infer, "application/json", fp([]int{5, 3, 16, 16}, "FP32", zeros), 400, "5 images"},
		{"too few values", infer, "application/json", fp([]int{1, 3, 16, 16}, "FP32", zeros[:100]), 400, "100 values"},
		{"strings as FP32", infer, "application/json", fp([]int{1, 3, 16, 16}, "FP32", []string{"a"}), 400, "not a number"},
		{"huge FP32", infer, "application/json", []byte(`{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1,3,16,16], "data": [[1e300]]}]}`), 400, "not an FP32"},
		{"bad base64", infer, "application/json", []byte(`{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["!!"]}]}`), 400, "base64"},
		{"BYTES count", infer, "application/json", []byte(`{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "data": ["AAAA"]}]}`), 400, "1 elements"},
		{"unknown model", "/v2/models/other/infer", "application/json", fp([]int{1, 3, 16, 16}, "FP32", zeros), 404, "unknown model"},
		{"unknown version", "/v2/models/fashion/versions/nope/infer", "application/json", fp([]int{1, 3, 16, 16}, "FP32", zeros), 404, "no version"},
		{"unknown model metadata", "/v2/models/other", "", nil, 404, "unknown model"},
		{"unknown path", "/v3/anything", "", nil, 404, "no such endpoint"},
		{"form without images", "/v1/predict", "multipart/form-data; boundary=xyz", []byte("--xyz--\r\n"), 400, "no images"},
		{"form without boundary", "/v1/predict", "multipart/form-data", []byte("x"), 400, "boundary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := "POST"
			if strings.HasPrefix(tt.name, "unknown model metadata") || tt.name == "unknown path" {
				method = "GET"
			}
			var e map[string]string
			code, _ := do(t, method, r.url+tt.path, tt.ctype, tt.body, &e)
			if code != tt.code || !strings.Contains(e["error"], tt.want) {
				t.Errorf("%d %q, want %d and an error with %q", code, e["error"], tt.code, tt.want)
			}
		})
	}
	var pr PredictResponse
	if code, _ := do(t, "POST", r.url+"/v1/predict", "image/png", good, &pr); code != 200 || len(pr.Predictions) != 1 {
		t.Errorf("after bad input: %d %+v", code, pr)
	}
}

// A full queue answers 429 with Retry-After at once; a request that outlives
// its timeout is answered 503; before any model, 503 and not ready.
func TestOverloadAndTimeout(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueDepth = 2
	r := startServer(t, cfg, nil)
	var ready map[string]bool
	if code, h := do(t, "GET", r.url+"/v2/health/ready", "", nil, &ready); code != 503 || ready["ready"] {
		t.Errorf("ready without a model: %d %v %v", code, ready, h)
	}
	var e map[string]string
	if code, h := do(t, "POST", r.url+"/v1/predict", "image/png", testPNG(t, 20, 20, 1), &e); code != 503 || h.Get("Retry-After") == "" || !strings.Contains(e["error"], "no model") {
		t.Errorf("infer without a model: %d %v", code, e)
	}
	if err := r.s.SetModel(testModel(t, 1)); err != nil {
		t.Fatal(err)
	}
	r.s.admit.Add(2) // two requests in flight
	code, h := do(t, "POST", r.url+"/v1/predict", "image/png", testPNG(t, 20, 20, 1), &e)
	if code != 429 || h.Get("Retry-After") != "1" || !strings.Contains(e["error"], "queue full") {
		t.Errorf("full queue: %d %v %v", code, h, e)
	}
	r.s.admit.Add(-2)
	if code, _ := do(t, "POST", r.url+"/v1/predict", "image/png", testPNG(t, 20, 20, 1), nil); code != 200 {
		t.Errorf("queue free again: %d", code)
	}

	cfg.RequestTimeout = time.Nanosecond
	r2 := startServer(t, cfg, testModel(t, 1))
	if code, h := do(t, "POST", r2.url+"/v1/predict", "image/png", testPNG(t, 20, 20, 1), &e); code != 503 || h.Get("Retry-After") == "" {
		t.Errorf("timed out: %d %v", code, e)
	}
}

// A flood beyond the queue gets 429 with Retry-After for the excess and
// 200 for the rest, never anything else; no more requests than the bound
// wait for a batch, and none is left admitted afterwards.
func TestFloodGets429(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueDepth = 3
	cfg.MaxDelay = 200 * time.Millisecond
	r := startServer(t, cfg, testModel(t, 1))
	r.s.b.decoding.Add(1) // batches wait: requests pile up
	img := testPNG(t, 20, 20, 1)
	const n = 12
	type answer struct {
		code  int
		retry string
	}
	answers := make(chan answer, n)
	var peak atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if v := int64(len(r.s.b.queue)); v > peak.Load() {
				peak.Store(v)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for range n {
		go func() {
			code, h := do(t, "POST", r.url+"/v1/predict", "image/png", img, nil)
			answers <- answer{code, h.Get("Retry-After")}
		}()
	}
	counts := map[int]int{}
	for range n {
		a := <-answers
		counts[a.code]++
		if a.code == 429 && a.retry == "" {
			t.Error("429 without Retry-After")
		}
	}
	close(stop)
	r.s.b.decoding.Add(-1)
	if counts[200]+counts[429] != n || counts[200] < 3 || counts[429] < 1 {
		t.Errorf("answers by code %v, want only 200 and 429, at least 3 and 1", counts)
	}
	if p := peak.Load(); p > 3 {
		t.Errorf("%d requests waiting for a batch at once, bound 3", p)
	}
	if v := r.s.admit.Load(); v != 0 {
		t.Errorf("%d requests still admitted", v)
	}
}
