package s3local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tailorml/tailor/store"
)

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { srv.Stop() })
	return srv
}

func put(t *testing.T, st store.Store, name, data string) {
	t.Helper()
	if err := st.Put(context.Background(), name, strings.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%s): %v", name, err)
	}
}

func get(t *testing.T, st store.Store, name string) string {
	t.Helper()
	rc, err := st.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%s): read: %v", name, err)
	}
	return string(b)
}

// A server starts on a loopback port with random credentials, checks
// signatures, serves a store through minio-go, stops (its port closed, the
// working directory back) and, started again on the same directory and
// port with other credentials, serves the same objects.
func TestStartStopRestart(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "s3")
	ctx := context.Background()

	srv := start(t, Config{Dir: dir})
	t.Logf("%v, metadata in %s", srv, srv.MetaMode())
	if host, _, err := net.SplitHostPort(srv.Endpoint()); err != nil || host != "127.0.0.1" {
		t.Errorf("endpoint %q: want 127.0.0.1:PORT", srv.Endpoint())
	}
	if len(srv.AccessKey()) < 16 || len(srv.SecretKey()) < 32 || srv.AccessKey() == srv.SecretKey() {
		t.Errorf("credentials: access key of %d characters, secret of %d; want random ones", len(srv.AccessKey()), len(srv.SecretKey()))
	}
	if got, _ := os.Getwd(); got != srv.Root() {
		t.Errorf("working directory while serving: %s, want the root %s", got, srv.Root())
	}
	if _, err := Start(ctx, Config{Dir: t.TempDir()}); !errors.Is(err, ErrRunning) {
		t.Errorf("a second Start while one runs: %v, want ErrRunning", err)
	}

	for range 2 { // MakeBucket of an existing bucket is no error
		if err := srv.MakeBucket(ctx, "tailor"); err != nil {
			t.Fatal(err)
		}
	}
	want := "s3://tailor/data?endpoint=http://" + srv.Endpoint() + "&region=us-east-1"
	if got := srv.URL("tailor", "data"); got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
	st, err := srv.Open(ctx, "tailor", "data")
	if err != nil {
		t.Fatal(err)
	}
	put(t, st, "shards/a.shard", "some bytes")
	if _, err := os.Stat(filepath.Join(dir, "root", "tailor", "data", "shards", "a.shard")); err != nil {
		t.Errorf("the object is not a file under the root: %v", err)
	}

	// the gateway checks signatures: a wrong secret is refused
	bad, err := minio.New(srv.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey(), "not-the-secret", ""),
		Region: Region, BucketLookup: minio.BucketLookupPath, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.StatObject(ctx, "tailor", "data/shards/a.shard", minio.StatObjectOptions{})
	if resp := minio.ToErrorResponse(err); resp.StatusCode != 403 {
		t.Errorf("StatObject with a wrong secret: %v (status %d), want 403", err, resp.StatusCode)
	}

	addr, access := srv.Endpoint(), srv.AccessKey()
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-srv.Done():
	default:
		t.Error("Done is open after Stop")
	}
	if err := srv.Err(); err != nil {
		t.Errorf("Err after Stop = %v, want nil", err)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", addr)
	}
	if got, _ := os.Getwd(); got != wd {
		t.Errorf("working directory after Stop: %s, want %s", got, wd)
	}

	srv2 := start(t, Config{Dir: dir, Addr: addr})
	if srv2.Endpoint() != addr || srv2.AccessKey() == access {
		t.Errorf("restart: endpoint %s, same credentials %v; want %s and new credentials", srv2.Endpoint(), srv2.AccessKey() == access, addr)
	}
	if err := srv2.MakeBucket(ctx, "tailor"); err != nil {
		t.Fatal(err)
	}
	st2, err := srv2.Open(ctx, "tailor", "data")
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, st2, "shards/a.shard"); got != "some bytes" {
		t.Errorf("after a restart: %q, want %q", got, "some bytes")
	}
	put(t, st2, "shards/b.shard", "more")
	if names, err := st2.List(ctx, ""); err != nil || strings.Join(names, " ") != "shards/a.shard shards/b.shard" {
		t.Errorf("List = %q, %v", names, err)
	}
	if err := srv2.Stop(); err != nil {
		t.Fatal(err)
	}
}

// A given address that is taken is an error that says so; nothing is left
// running or changed.
func TestAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	wd, _ := os.Getwd()
	_, err = Start(context.Background(), Config{Dir: t.TempDir(), Addr: l.Addr().String()})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Start on a port in use: %v, want EADDRINUSE", err)
	}
	if got, _ := os.Getwd(); got != wd {
		t.Errorf("working directory after a failed Start: %s, want %s", got, wd)
	}
	srv := start(t, Config{Dir: t.TempDir()}) // the failed start holds nothing
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Dir: t.TempDir(), AccessKey: "only-the-access-key"},
		{Dir: t.TempDir(), Meta: "xattrs"},
	} {
		if srv, err := Start(context.Background(), cfg); err == nil {
			srv.Stop()
			t.Errorf("Start(%+v): no error", cfg)
		}
	}
}

// Env and Getenv give a process the credentials and nothing that would
// compete with them.
func TestEnv(t *testing.T) {
	s := &Server{endpoint: "127.0.0.1:9", access: "tailorAKIA0123456789", secret: "s3cr3t-s3cr3t-s3cr3t"}
	env := strings.Join(s.Env(), "\n")
	for _, want := range []string{"AWS_ACCESS_KEY_ID=tailorAKIA0123456789", "AWS_SECRET_ACCESS_KEY=s3cr3t-s3cr3t-s3cr3t", "AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_SHARED_CREDENTIALS_FILE="} {
		if !strings.Contains(env, want+"\n") && !strings.HasSuffix(env, want) {
			t.Errorf("Env lacks %s:\n%s", want, env)
		}
	}
	if s.Getenv("AWS_SECRET_ACCESS_KEY") != s.secret || s.Getenv("AWS_ACCESS_KEY_ID") != s.access || s.Getenv("AWS_SESSION_TOKEN") != "" || s.Getenv("HOME") != "" {
		t.Error("Getenv does not give exactly the credentials")
	}
	cfg, err := store.ParseS3URL(s.URL("tailor", "ds"), store.OpenOptions{Getenv: s.Getenv})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Endpoint != "127.0.0.1:9" || cfg.TLS || cfg.Region != Region || cfg.AccessKey != s.access || cfg.SecretKey != s.secret {
		t.Errorf("the URL and Getenv give %v", cfg)
	}
}

// The secret key shows nowhere: not in the server's String, GoString or
// slog value, its URL, or anything the gateway prints while it starts,
// serves a refused and an accepted request, and stops.
func TestSecretNeverShown(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	printed := make(chan string)
	go func() { b, _ := io.ReadAll(r); printed <- string(b) }()
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = w, w
	log.SetOutput(w)
	restore := func() {
		os.Stdout, os.Stderr = stdout, stderr
		log.SetOutput(os.Stderr)
	}
	defer restore()

	ctx := context.Background()
	srv, err := Start(ctx, Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	secret := srv.SecretKey()
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("embedded s3", "server", srv)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("embedded s3", "server", srv)
	shown := fmt.Sprintf("%v %+v %#v %s %s", srv, srv, srv, srv, srv.URL("tailor", "x")) + logs.String()

	if err := srv.MakeBucket(ctx, "tailor"); err != nil {
		t.Fatal(err)
	}
	st, err := srv.Open(ctx, "tailor", "x")
	if err != nil {
		t.Fatal(err)
	}
	put(t, st, "a", "a")
	wrong := func(k string) string {
		if k == "AWS_SECRET_ACCESS_KEY" {
			return secret[:10] + "-wrong"
		}
		return srv.Getenv(k)
	}
	_, err = store.OpenWith(ctx, srv.URL("tailor", "x"), store.OpenOptions{Getenv: wrong})
	if !errors.Is(err, store.ErrAccessDenied) {
		t.Errorf("open with a wrong secret: %v, want ErrAccessDenied", err)
	}
	if err != nil {
		shown += err.Error()
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	restore()
	out := <-printed
	t.Logf("shown: %s\nprinted by the gateway: %q", shown, out)
	for what, text := range map[string]string{"String/GoString/slog/URL/errors": shown, "stdout and stderr": out} {
		if strings.Contains(text, secret) || strings.Contains(text, secret[:10]) {
			t.Errorf("%s show the secret key", what)
		}
	}
}

// A directory served with sidecar metadata is served so again.
func TestSidecarKept(t *testing.T) {
	dir := t.TempDir()
	srv := start(t, Config{Dir: dir, Meta: MetaSidecar})
	ctx := context.Background()
	if err := srv.MakeBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	st, err := srv.Open(ctx, "bkt", "")
	if err != nil {
		t.Fatal(err)
	}
	put(t, st, "m.json", "{}")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	srv = start(t, Config{Dir: dir})
	if srv.MetaMode() != MetaSidecar {
		t.Errorf("metadata mode on restart: %s, want %s", srv.MetaMode(), MetaSidecar)
	}
	st, err = srv.Open(ctx, "bkt", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, st, "m.json"); got != "{}" {
		t.Errorf("after a restart: %q", got)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
}
