package serve

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/gif"
	"image/jpeg"
	"mime/multipart"
	"net/http"
	"testing"
)

var fuzzLimits = limits{maxImages: 4, maxPixels: 1 << 16}

// FuzzDecodeInfer feeds v2 inference request bodies to the decoder: it must
// never panic, refuse with 400 only, and accept only tensors of the model's
// shape.
func FuzzDecodeInfer(f *testing.F) {
	m := testModel(f, 1)
	f.Add(fp32Request(make([]float32, m.inputLen()), 1))
	f.Add(bytesRequest(testPNG(f, 20, 20, 1)))
	f.Add(bytesRequest(pngHeader(1<<20, 1<<20)))
	f.Add([]byte(`{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1,3,16,16], "data": [[[[1,2]]]]}]}`))
	f.Add([]byte(`{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["iVBORw0KGgo="]}]}`))
	f.Add([]byte(`{"id": 1, "inputs": null}`))
	f.Add([]byte(`{"inputs": [{"name": "input", "datatype": "FP32", "shape": [9223372036854775807,3,16,16], "data": []}]}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, x, n, err := decodeInfer(body, m, fuzzLimits)
		if err != nil {
			if code := statusOf(err); code != http.StatusBadRequest {
				t.Fatalf("status %d for %v", code, err)
			}
			return
		}
		if n < 1 || n > fuzzLimits.maxImages || len(x) != n*m.inputLen() {
			t.Fatalf("accepted %d images in %d floats", n, len(x))
		}
	})
}

// FuzzDecodeImage feeds encoded images to the image decoder: it must never
// panic, and never decode past the pixel limit.
func FuzzDecodeImage(f *testing.F) {
	m := testModel(f, 1)
	f.Add(testPNG(f, 20, 20, 1))
	f.Add(testPNG(f, 300, 300, 2)) // over the fuzz pixel limit
	f.Add(pngHeader(100_000, 100_000))
	small := image.NewRGBA(image.Rect(0, 0, 13, 17))
	var jb, gb bytes.Buffer
	_ = jpeg.Encode(&jb, small, nil)
	_ = gif.Encode(&gb, small, nil)
	f.Add(jb.Bytes())
	f.Add(gb.Bytes())
	f.Add([]byte("GIF89a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dst := make([]float32, m.inputLen())
		if err := decodeImage(data, m, fuzzLimits, dst); err != nil {
			return
		}
		cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
		if err != nil || int64(cfg.Width)*int64(cfg.Height) > fuzzLimits.maxPixels {
			t.Fatalf("decoded an image whose header is %+v, %v", cfg, err)
		}
	})
}

// FuzzReadMultipart feeds /v1/predict form bodies to the form reader.
func FuzzReadMultipart(f *testing.F) {
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	_ = mw.SetBoundary("b0undary")
	fw, _ := mw.CreateFormFile("image", "a.png")
	_, _ = fw.Write(testPNG(f, 20, 20, 1))
	_ = mw.WriteField("note", "")
	mw.Close()
	f.Add(form.Bytes())
	f.Add([]byte("--b0undary--\r\n"))
	f.Add([]byte("--b0undary\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n" + base64.StdEncoding.EncodeToString([]byte("hi")) + "\r\n--b0undary--\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		imgs, err := readMultipart(multipart.NewReader(bytes.NewReader(body), "b0undary"), fuzzLimits)
		if err != nil {
			if code := statusOf(err); code != http.StatusBadRequest {
				t.Fatalf("status %d for %v", code, err)
			}
			return
		}
		if len(imgs) < 1 || len(imgs) > fuzzLimits.maxImages {
			t.Fatalf("%d images", len(imgs))
		}
	})
}
