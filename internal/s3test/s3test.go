// Package s3test runs a real S3 server for tests: the versitygw gateway,
// embedded in the test binary, over a POSIX directory, checking AWS
// signature V4 on every request like any S3 service does.
//
//	srv := s3test.Start(t)     // once per test binary; later calls reuse it
//	bucket := srv.NewBucket(t) // a fresh, empty bucket for this test
//	url := srv.StoreURL(bucket, "ds") // s3://bucket/ds?endpoint=...&tls=false&...
//
// The credentials are not in the URL: set them with srv.SetEnv(t) or pass
// srv.AccessKey and srv.SecretKey explicitly.
//
// Two quirks of versitygw v1.8.0 shape this package:
//
//   - Only one gateway may run per process (embedgw keeps package-level
//     state), so Start starts it once, on a free 127.0.0.1 port with a random
//     root key pair, and it runs until the test binary exits. Each test gets
//     its own bucket instead; NewBucket removes the bucket's files when the
//     test ends, and the next test binary removes the gateway directories
//     of binaries that have exited.
//   - The POSIX backend resolves buckets relative to the process's working
//     directory: posix.New chdirs into the gateway root. Start therefore puts
//     the working directory back at once and, for every test that calls it,
//     switches into the gateway root with t.Chdir for the test's duration.
//     Tests that use the server cannot be parallel (t.Chdir enforces that),
//     and must not use relative paths while it serves them: resolve testdata
//     paths with filepath.Abs before calling Start.
//
// Object metadata (ETags, content types) lives in user extended attributes
// when the temp directory's filesystem supports them, else in a sidecar
// directory; TAILOR_S3TEST_META=sidecar forces the latter.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
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
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
	"github.com/versity/versitygw/s3api"
)

// Region is the region the server reports and signs for.
const Region = "us-east-1"

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

// start launches the gateway; it is called once per process.
func start() (*Server, error) {
	removeStale()
	base, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", dirPrefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	root := filepath.Join(base, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return nil, err
	}
	access, secret := "tailor"+randomHex(8), randomHex(20)
	srv := &Server{AccessKey: access, SecretKey: secret, Region: Region, root: root}

	var ms meta.MetadataStorer = meta.XattrMeta{}
	opts := posix.PosixOpts{Concurrency: 64}
	srv.MetaMode = "xattr"
	xattrErr := probeXattr(root)
	if os.Getenv("TAILOR_S3TEST_META") == "sidecar" {
		xattrErr = errors.New("sidecar forced by TAILOR_S3TEST_META")
	}
	if xattrErr != nil {
		sidecar := filepath.Join(base, "sidecar")
		if err := os.Mkdir(sidecar, 0o755); err != nil {
			return nil, err
		}
		sc, err := meta.NewSideCar(sidecar)
		if err != nil {
			return nil, fmt.Errorf("sidecar metadata: %w", err)
		}
		ms, opts.SideCarDir, srv.MetaMode = sc, sidecar, "sidecar"
	}

	// posix.New chdirs into root; the working directory is restored here
	// and switched per test by Start.
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	be, err := posix.New(root, ms, opts)
	if chErr := os.Chdir(wd); chErr != nil && err == nil {
		err = chErr
	}
	if err != nil {
		return nil, fmt.Errorf("posix backend: %w", err)
	}

	// Pick a free port, then bind it in the gateway; another process may take
	// the port in between, so try a few times.
	for attempt := 0; ; attempt++ {
		srv.Endpoint, err = freePort()
		if err != nil {
			return nil, err
		}
		err = run(be, srv)
		if err == nil {
			break
		}
		if attempt == 2 || !strings.Contains(err.Error(), "bind") {
			return nil, err
		}
	}

	srv.client, err = minio.New(srv.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(access, secret, ""),
		Region:       Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		return nil, err
	}
	return srv, nil
}

// run starts the gateway in the background and waits until it listens, or
// fails. The gateway then runs until the process exits.
func run(be *posix.Posix, srv *Server) error {
	ready := make(chan struct{})
	var readyOnce sync.Once
	cfg := &embedgw.Config{
		RootUserAccess:    srv.AccessKey,
		RootUserSecret:    srv.SecretKey,
		Region:            Region,
		Ports:             []string{srv.Endpoint},
		MaxConnections:    256,
		MaxRequests:       128,
		MultipartMaxParts: 10000,
		Quiet:             true,
		S3Options: []s3api.Option{s3api.WithOnListen(func() {
			readyOnce.Do(func() { close(ready) })
		})},
	}
	done := make(chan error, 1)
	go func() { done <- embedgw.RunVersityGW(context.Background(), be, cfg) }()
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case <-ready:
	case err := <-done:
		if err == nil {
			err = errors.New("gateway stopped at once")
		}
		return fmt.Errorf("versitygw on %s: %w", srv.Endpoint, err)
	case <-timer.C:
		return fmt.Errorf("versitygw on %s: not listening after 20s", srv.Endpoint)
	}
	// OnListen fires just before the first Accept; confirm with a dial.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", srv.Endpoint, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw on %s: %w", srv.Endpoint, err)
		}
		select {
		case err := <-done:
			return fmt.Errorf("versitygw on %s stopped: %w", srv.Endpoint, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
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

// probeXattr checks that user extended attributes can be set in dir.
func probeXattr(dir string) error {
	p := filepath.Join(dir, ".xattr-probe")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		return err
	}
	defer os.Remove(p)
	want := []byte("1")
	if err := (meta.XattrMeta{}).StoreAttribute(nil, dir, ".xattr-probe", "probe", want); err != nil {
		return err
	}
	got, err := (meta.XattrMeta{}).RetrieveAttribute(nil, dir, ".xattr-probe", "probe")
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("xattr read back %q, want %q", got, want)
	}
	return nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
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
