package localcluster

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/shard"
	"github.com/tailorml/tailor/store"
)

// isolated runs the calling test alone in a new process of the test
// binary and reports its result, unless this is that process: the
// embedded S3 server is one per process and changes the working
// directory, and the s3test server of other tests would hold it.
func isolated(t *testing.T) bool {
	t.Helper()
	const key = "TAILOR_TEST_ISOLATED"
	if os.Getenv(key) == t.Name() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), key+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("in a process of its own:\n%s", out)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatal("the test did not run")
	}
	return true
}

// The embedded S3 store of a local cluster: a new run's server listens on
// 127.0.0.1 with random credentials that only the processes' environment
// carries (not the URL, the logs or the output); a --data folder is copied
// into it once; a resumed run's server comes back on the same port with
// the objects, and Stop puts the working directory back.
func TestS3Store(t *testing.T) {
	if isolated(t) {
		return
	}
	// the only credentials are the server's
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	ctx := context.Background()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	folder := filepath.Join(t.TempDir(), "ds")
	local, err := store.NewLocal(folder)
	if err != nil {
		t.Fatal(err)
	}
	bc := shard.DefaultBuildConfig()
	bc.Size, bc.MinSide = 8, 4
	if _, err := shard.Build(ctx, bc, testTree(t), local, nil, nil); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	srv, err := startS3(ctx, filepath.Join(out, s3Dir), false)
	if err != nil {
		t.Fatal(err)
	}
	secret := srv.SecretKey()
	if !strings.HasPrefix(srv.Endpoint(), "127.0.0.1:") || len(secret) < 32 {
		t.Errorf("endpoint %s, a secret of %d characters: want 127.0.0.1 and a random secret", srv.Endpoint(), len(secret))
	}
	log.Info("embedded s3", "server", srv, "data", srv.URL(bucket, dataPrefix))
	dst, err := srv.Open(ctx, bucket, dataPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := copyDataSet(ctx, log, local, dst); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "copying the data set"); n != 1 {
		t.Errorf("the data set was copied %d times, want once:\n%s", n, logs.String())
	}
	url := srv.URL(bucket, dataPrefix)
	if err := checkStore(ctx, url, store.OpenOptions{Getenv: srv.Getenv}); err != nil {
		t.Errorf("the copy does not load: %v", err)
	}
	if err := checkStore(ctx, url, store.OpenOptions{}); err == nil {
		t.Error("the store opens without the server's credentials")
	}
	if env := strings.Join(srv.Env(), " "); !strings.Contains(env, "AWS_ACCESS_KEY_ID="+srv.AccessKey()) || !strings.Contains(env, "AWS_SECRET_ACCESS_KEY="+secret) {
		t.Error("the processes' environment lacks the credentials")
	}

	addr := srv.Endpoint()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Getwd(); got != wd {
		t.Errorf("working directory after Stop: %s, want %s", got, wd)
	}
	srv, err = startS3(ctx, filepath.Join(out, s3Dir), true)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Endpoint() != addr {
		t.Errorf("a resumed run's server listens on %s, want %s (its spec names that)", srv.Endpoint(), addr)
	}
	if err := checkStore(ctx, url, store.OpenOptions{Getenv: srv.Getenv}); err != nil {
		t.Errorf("after a restart: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	all := logs.String()
	t.Logf("logs:\n%s", all)
	if strings.Contains(all, secret) || strings.Contains(all, srv.SecretKey()) {
		t.Error("the logs show a secret key")
	}
}

// testTree writes a tiny folder data set with a train and a val split.
func testTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for i, rel := range []string{"train/red_dress/a.png", "train/blue_dress/b.png", "val/red_shirt/c.png"} {
		img := image.NewNRGBA(image.Rect(0, 0, 10, 10))
		for p := range img.Pix {
			img.Pix[p] = uint8(40 * (i + 1))
			if p%4 == 3 {
				img.Pix[p] = 255 // opaque
			}
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(src, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return src
}
