// Package s3test runs a real S3 server for tests: store/s3local (the
// versitygw gateway, embedded in the test binary, over a POSIX directory,
// checking AWS signature V4 on every request like any S3 service does).
//
//	srv := s3test.Start(t)     // once per test binary; later calls reuse it
//	bucket := srv.NewBucket(t) // a fresh, empty bucket for this test
//	url := srv.StoreURL(bucket, "ds") // s3://bucket/ds?endpoint=...&tls=false&...
//
// The credentials are not in the URL: set them with srv.SetEnv(t) or pass
// srv.AccessKey and srv.SecretKey explicitly.
//
// Two quirks of versitygw v1.8.0 (see store/s3local) shape this package:
//
//   - Only one gateway may run per process, so Start starts it once, on a
//     free 127.0.0.1 port with a random root key pair, and it runs until the
//     test binary exits. Each test gets its own bucket instead; NewBucket
//     removes the bucket's files when the test ends, and the next test
//     binary removes the gateway directories of binaries that have exited.
//   - The POSIX backend resolves buckets relative to the process's working
//     directory. Start therefore puts the working directory back at once
//     and, for every test that calls it, switches into the gateway root with
//     t.Chdir for the test's duration. Tests that use the server cannot be
//     parallel (t.Chdir enforces that), and must not use relative paths
//     while it serves them: resolve testdata paths with filepath.Abs before
//     calling Start.
//
// Object metadata (ETags, content types) lives in user extended attributes
// when the temp directory's filesystem supports them, else in a sidecar
// directory; TAILOR_S3TEST_META=sidecar forces the latter.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tailorml/tailor/store/s3local"
)

// Region is the region the server reports and signs for.
const Region = s3local.Region

// Server is a running S3 gateway. Its fields are read-only.
type Server struct {
	// Endpoint is the server's host:port on 127.0.0.1, plain HTTP.
	Endpoint string
	// AccessKey and SecretKey are the root account's random credentials.
	AccessKey string
	SecretKey string
	// Region is the signing region (Region).
	Region string
	// MetaMode says how object metadata is kept: "xattr" (extended
	// attributes on the object files) or "sidecar" (files in a separate
	// directory, when the filesystem refuses user xattrs).
	MetaMode string

	root   string // gateway root: one directory per bucket
	client *minio.Client
}

var (
	once     sync.Once
	shared   *Server
	startErr error
)

// Start returns the test binary's S3 server, starting it on first use, and
// makes the gateway root the working directory until t ends (see the
// package comment). It fails t if the server cannot start.
func Start(t testing.TB) *Server {
	t.Helper()
	once.Do(func() { shared, startErr = start() })
	if startErr != nil {
		t.Fatalf("s3test: %v", startErr)
	}
	t.Chdir(shared.root)
	return shared
}

// start launches the gateway; it is called once per process. The gateway
// then runs until the process exits.
func start() (*Server, error) {
	removeStale()
	base, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", dirPrefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	cfg := s3local.Config{Dir: base}
	if os.Getenv("TAILOR_S3TEST_META") == "sidecar" {
		cfg.Meta = s3local.MetaSidecar
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := s3local.Start(ctx, cfg)
	// s3local.Start makes the root the working directory: it is restored
	// here and switched per test by Start
	if chErr := os.Chdir(wd); chErr != nil && err == nil {
		err = chErr
	}
	if err != nil {
		return nil, err
	}
	return &Server{Endpoint: srv.Endpoint(), AccessKey: srv.AccessKey(), SecretKey: srv.SecretKey(), Region: Region,
		MetaMode: srv.MetaMode(), root: srv.Root(), client: srv.Client()}, nil
}

// dirPrefix starts the names of the gateways' temp directories, followed
// by the owning process's ID.
const dirPrefix = "tailor-s3test-"

// removeStale removes the temp directories of test binaries that have
// exited: the gateway outlives every test, so nothing else removes them.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), dirPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		os.RemoveAll(d)
	}
}

func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	return !errors.Is(p.Signal(syscall.Signal(0)), os.ErrProcessDone)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NewBucket creates an empty bucket with a random name and removes it with
// its objects when t ends.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := "t-" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		t.Fatalf("s3test: create bucket %s: %v", name, err)
	}
	t.Cleanup(func() {
		// The gateway has no recursive bucket delete; its files are ours.
		os.RemoveAll(filepath.Join(s.root, name))
	})
	return name
}

// StoreURL is the shard store URL of prefix in bucket on this server, with
// endpoint, region, path style and plain HTTP set; prefix may be "".
// It holds no credentials.
func (s *Server) StoreURL(bucket, prefix string) string {
	q := url.Values{}
	q.Set("endpoint", s.Endpoint)
	q.Set("region", s.Region)
	q.Set("tls", "false")
	q.Set("path_style", "true")
	u := url.URL{Scheme: "s3", Host: bucket, Path: "/" + prefix, RawQuery: q.Encode()}
	if prefix == "" {
		u.Path = ""
	}
	return u.String()
}

// SetEnv points the AWS credential variables at this server's root account
// for the duration of t, and clears the variables that would compete with
// them (profile, credentials file, endpoint overrides).
func (s *Server) SetEnv(t testing.TB) {
	t.Helper()
	for _, k := range []string{"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "TAILOR_S3_ENDPOINT", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", s.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretKey)
}

// Client returns a minio-go client with root credentials, for test setup
// such as planting damaged objects.
func (s *Server) Client() *minio.Client { return s.client }

// Root returns the gateway's root directory; bucket b's objects are the
// files under Root()/b.
func (s *Server) Root() string { return s.root }
