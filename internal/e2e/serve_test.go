package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/model"
	"github.com/tailorml/tailor/shard"
)

// servedModel is a model file's predictions, computed here one image at a
// time, to check the server's answers against.
type servedModel struct {
	b       *model.Bundle
	version string
	probs   map[string][]float32 // by image path
}

func loadServed(t *testing.T, path string, images []string) *servedModel {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := model.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	s := &servedModel{b: b, version: fmt.Sprintf("%x", data[len(data)-32:])[:12], probs: map[string][]float32{}}
	for _, img := range images {
		x := normalisedImage(t, b, img)
		p := make([]float32, len(b.Labels))
		if err := b.Net.Predict(x, 1, p); err != nil {
			t.Fatal(err)
		}
		s.probs[img] = p
	}
	return s
}

func normalisedImage(t *testing.T, b *model.Bundle, path string) []float32 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.Net.Config()
	pix, err := shard.DecodeImage(data, cfg.Size, b.Meta["interpolation"])
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, cfg.InputLen())
	input.Normalize(x, pix, cfg.Size, cfg.Size, cfg.Channels, b.Mean, b.Std)
	return x
}

func near(got, want []float32) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d probabilities, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-5 {
			return fmt.Errorf("probability %d is %g, want %g", i, got[i], want[i])
		}
	}
	return nil
}

type inferAnswer struct {
	ModelVersion string `json:"model_version"`
	Outputs      []struct {
		Shape []int     `json:"shape"`
		Data  []float32 `json:"data"`
	} `json:"outputs"`
	Error string `json:"error"`
}

func post(url, ctype string, body []byte, out any) (int, error) {
	resp, err := http.Post(url, ctype, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, fmt.Errorf("%q: %w", data, err)
	}
	return resp.StatusCode, nil
}

// TestServe trains a model with `tailor train`, serves it with the real
// `tailor serve` binary following a run through etcd, checks every answer
// (v2 FP32 and BYTES, /v1/predict) against the model's own prediction,
// replaces the run's best model under load (zero failed requests, every
// answer from exactly the version it names), and stops it with SIGTERM.
func TestServe(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	train := exec.CommandContext(ctx, bin, "train", "--data", data, "--out", out, "--epochs", "1", "--batch", "16", "--bn-batches", "2", "--threads", "2")
	if b, err := train.CombinedOutput(); err != nil {
		t.Fatalf("tailor train: %v\n%s", err, b)
	}
	modelPath := filepath.Join(out, "model.tailor")
	images, _ := filepath.Glob(filepath.Join(filepath.Dir(data), "images", "*", "*", "*.png"))
	if len(images) < 8 {
		images, _ = filepath.Glob(filepath.Join(filepath.Dir(data), "images", "*", "*.png"))
	}
	if len(images) < 8 {
		t.Fatalf("%d test images", len(images))
	}
	sort.Strings(images)
	images = images[:8]

	// a run in an embedded etcd whose output folder holds the model
	e, err := cluster.StartEtcd(ctx, cluster.EtcdConfig{Dir: t.TempDir(), FastTicks: true, UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := cluster.NewClient(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	spec := job.DefaultSpec("serve-e2e", data)
	spec.Out = out
	if err := job.Submit(ctx, cli, spec); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, bin, "serve", "--run", "serve-e2e", "--etcd", strings.Join(e.Endpoints(), ","),
		"--listen", "127.0.0.1:0", "--name", "fashion", "--recheck", "0", "--max-batch", "8")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatalf("tailor serve printed nothing: %s", stderr.String())
	}
	m := regexp.MustCompile(`on (http://[0-9.:]+)/`).FindStringSubmatch(lines.Text())
	if m == nil {
		t.Fatalf("no address in %q", lines.Text())
	}
	base := m[1]
	rest := make(chan string, 1)
	go func() {
		var b strings.Builder
		for lines.Scan() {
			b.WriteString(lines.Text() + "\n")
		}
		rest <- b.String()
	}()
	waitReady := func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get(base + "/v2/models/fashion/ready")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("not ready within 30 s: %v\n%s", err, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitReady()

	// every answer is the model's own
	m1 := loadServed(t, modelPath, images)
	for _, img := range images {
		raw, _ := os.ReadFile(img)
		var pr struct {
			ModelVersion string `json:"model_version"`
			Predictions  []struct {
				Labels []struct {
					Label       string  `json:"label"`
					Probability float32 `json:"probability"`
					Present     bool    `json:"present"`
				} `json:"labels"`
				Present []string `json:"present"`
			} `json:"predictions"`
		}
		if code, err := post(base+"/v1/predict", "image/png", raw, &pr); code != 200 || err != nil || len(pr.Predictions) != 1 {
			t.Fatalf("/v1/predict %s: %d %v", img, code, err)
		}
		if pr.ModelVersion != m1.version {
			t.Errorf("version %q, want %q", pr.ModelVersion, m1.version)
		}
		want := m1.probs[img]
		var present []string
		for _, l := range pr.Predictions[0].Labels {
			k := indexOf(m1.b.Labels, l.Label)
			if k < 0 || math.Abs(float64(l.Probability-want[k])) > 1e-5 || l.Present != (want[k] >= m1.b.Thresholds[k]) {
				t.Errorf("%s: %+v, want probability %g, threshold %g", img, l, want[k], m1.b.Thresholds[k])
			}
			if l.Present {
				present = append(present, l.Label)
			}
		}
		if fmt.Sprint(present) != fmt.Sprint(pr.Predictions[0].Present) {
			t.Errorf("%s: present %v, want %v", img, pr.Predictions[0].Present, present)
		}
	}
	var bytesReq []any
	var xs []float32
	for _, img := range images {
		raw, _ := os.ReadFile(img)
		bytesReq = append(bytesReq, base64.StdEncoding.EncodeToString(raw))
		xs = append(xs, normalisedImage(t, m1.b, img)...)
	}
	size := m1.b.Net.Config().Size
	for _, req := range []map[string]any{
		{"name": "images", "datatype": "BYTES", "shape": []int{len(images)}, "data": bytesReq},
		{"name": "input", "datatype": "FP32", "shape": []int{len(images), 3, size, size}, "data": xs},
	} {
		body, _ := json.Marshal(map[string]any{"inputs": []any{req}})
		var ans inferAnswer
		if code, err := post(base+"/v2/models/fashion/infer", "application/json", body, &ans); code != 200 || err != nil {
			t.Fatalf("infer %s: %d %v %s", req["datatype"], code, err, ans.Error)
		}
		if ans.ModelVersion != m1.version || fmt.Sprint(ans.Outputs[0].Shape) != fmt.Sprintf("[%d %d]", len(images), len(m1.b.Labels)) {
			t.Errorf("infer %s: version %s shape %v", req["datatype"], ans.ModelVersion, ans.Outputs[0].Shape)
		}
		for i, img := range images {
			l := len(m1.b.Labels)
			if err := near(ans.Outputs[0].Data[i*l:(i+1)*l], m1.probs[img]); err != nil {
				t.Errorf("infer %s, image %d: %v", req["datatype"], i, err)
			}
		}
	}
	var bad inferAnswer
	if code, _ := post(base+"/v1/predict", "image/png", []byte("not a photo"), &bad); code != 400 || bad.Error == "" {
		t.Errorf("not an image: %d %q", code, bad.Error)
	}

	// a new best model under load: clients never see a failure, and every
	// answer is its version's
	b2, err := model.Load(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b2.Thresholds {
		b2.Thresholds[i] = 0.3
	}
	for _, p := range b2.Net.Params() {
		if p.Name == "out/b" {
			for i := range p.Data {
				p.Data[i] += 0.5 * float32(i%3)
			}
		}
	}
	b2.Meta["epoch"] = "2"
	served := map[string]*servedModel{m1.version: m1}
	var mu sync.Mutex
	seen := map[string]int{}
	var failures []string
	var stop atomic.Bool
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				img := images[(c+i)%len(images)]
				raw, _ := os.ReadFile(img)
				body, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "images", "datatype": "BYTES", "shape": []int{1},
					"data": []string{base64.StdEncoding.EncodeToString(raw)}}}})
				var ans inferAnswer
				code, err := post(base+"/v2/models/fashion/infer", "application/json", body, &ans)
				mu.Lock()
				if code != 200 || err != nil {
					failures = append(failures, fmt.Sprintf("client %d: %d %v %s", c, code, err, ans.Error))
				} else if sm := served[ans.ModelVersion]; sm == nil {
					failures = append(failures, fmt.Sprintf("client %d: unknown version %q", c, ans.ModelVersion))
				} else if err := near(ans.Outputs[0].Data, sm.probs[img]); err != nil {
					failures = append(failures, fmt.Sprintf("client %d, version %s: %v", c, ans.ModelVersion, err))
				} else {
					seen[ans.ModelVersion]++
				}
				mu.Unlock()
			}
		}()
	}
	count := func(v string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[v]
	}
	waitCount := func(v string, n int) {
		deadline := time.Now().Add(30 * time.Second)
		for count(v) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d answers from version %s within 30 s, want %d\n%s", count(v), v, n, stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCount(m1.version, 20)
	// the leader's way: the model file replaced, then the pointer moved
	tmp := filepath.Join(out, "model2.tailor")
	if err := b2.Save(tmp); err != nil {
		t.Fatal(err)
	}
	m2 := loadServed(t, tmp, images)
	mu.Lock()
	served[m2.version] = m2
	mu.Unlock()
	if err := os.Rename(tmp, modelPath); err != nil {
		t.Fatal(err)
	}
	keys := cluster.RunKeys("serve-e2e")
	if _, err := checkpoint.Publish(ctx, cli, keys, checkpoint.Pointer{JobID: "j", Name: "000000000010-000001", Step: 10, Epochs: 1, Created: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	waitCount(m2.version, 40)
	stop.Store(true)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("answers by version: %v", seen)

	// SIGTERM: finishes and says so
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("tailor serve after SIGTERM: %v\n%s", err, stderr.String())
	}
	if s := <-rest; !strings.Contains(s, "stopped") {
		t.Errorf("stdout after SIGTERM: %q", s)
	}
	for _, want := range []string{"serving model", "version=" + m2.version, "previous=" + m1.version} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
