package serve

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// writeModel replaces path with data as training does (a new file renamed
// over the old).
func writeModel(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// The server follows its model file: each new file is loaded and swapped in
// while clients keep sending requests; no request fails, and every answer
// is exactly what the version it names predicts.
func TestReloadUnderLoad(t *testing.T) {
	cfg := testConfig(t)
	cfg.Recheck = 10 * time.Millisecond
	dir := t.TempDir()
	path := filepath.Join(dir, "model.tailor")
	files := map[string][]byte{}
	var order []string
	for seed := uint64(1); seed <= 3; seed++ {
		data := testModelFile(t, seed)
		v := fileVersion(data)
		files[v] = data
		order = append(order, v)
	}
	writeModel(t, path, files[order[0]])
	r := startServer(t, cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	followed := make(chan error, 1)
	go func() { followed <- r.s.Follow(ctx, Source{Path: path}) }()
	waitFor(t, 10*time.Second, "first model", func() bool { return r.s.Model() != nil })

	img := testPNG(t, 30, 30, 5)
	want := map[string][]float32{}
	for v, data := range files {
		want[v] = reference(t, data, normalised(t, data, img), 1)
	}

	var (
		mu       sync.Mutex
		seen     = map[string]int{}
		failures []string
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	body := bytesRequest(img)
	for c := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var resp inferResponse
				code, _ := do(t, "POST", r.url+"/v2/models/fashion/infer", "application/json", body, &resp)
				mu.Lock()
				switch {
				case code != 200:
					failures = append(failures, fmt.Sprintf("client %d: status %d", c, code))
				case want[resp.ModelVersion] == nil:
					failures = append(failures, fmt.Sprintf("client %d: unknown version %q", c, resp.ModelVersion))
				default:
					if err := closeTo(resp.Outputs[0].Data, want[resp.ModelVersion], 1e-5); err != nil {
						failures = append(failures, fmt.Sprintf("client %d, version %s: %v", c, resp.ModelVersion, err))
					}
					seen[resp.ModelVersion]++
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
	for _, v := range append(order, order[0]) {
		writeModel(t, path, files[v])
		base := count(v)
		waitFor(t, 10*time.Second, "answers from version "+v, func() bool { return count(v) >= base+20 })
	}
	stop.Store(true)
	wg.Wait()
	cancel()
	if err := <-followed; err != nil {
		t.Errorf("Follow: %v", err)
	}
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("answers by version: %v", seen)

	// a corrupt file is refused and the model served stays
	before := r.s.Model().Version
	bad := append([]byte(nil), files[order[1]]...)
	bad[len(bad)/2] ^= 1
	writeModel(t, path, bad)
	f := &follower{s: r.s, path: path}
	if err := f.check(context.Background()); err == nil {
		t.Error("a corrupt model file was loaded")
	}
	if got := r.s.Model().Version; got != before {
		t.Errorf("serving %s after a corrupt file, want %s", got, before)
	}
}

// Shutdown finishes the requests in flight, then stops.
func TestGracefulShutdown(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxDelay = 300 * time.Millisecond
	r := startServer(t, cfg, testModel(t, 1))
	// a request being decoded keeps batches waiting: the requests below
	// are in flight when the server is told to stop
	r.s.b.decoding.Add(1)
	img := testPNG(t, 20, 20, 1)
	codes := make(chan int, 4)
	for range 4 {
		go func() {
			code, _ := do(t, "POST", r.url+"/v1/predict", "image/png", img, nil)
			codes <- code
		}()
	}
	waitFor(t, 10*time.Second, "requests in flight", func() bool { return r.s.admit.Load() == 4 })
	if err := r.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for range 4 {
		if code := <-codes; code != 200 {
			t.Errorf("request in flight at shutdown: %d", code)
		}
	}
	if _, err := (&httpClient{}).get(r.url + "/v2/health/live"); err == nil {
		t.Error("still serving after shutdown")
	}
}
