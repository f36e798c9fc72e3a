// Package s3local runs an S3 server inside the process: the versitygw
// gateway over a directory, on a loopback port, checking AWS signature V4
// on every request as any S3 service does. `tailor local` keeps a run's
// shards and checkpoints in one, so that every process reads and writes
// them through minio-go as it does against S3 in production;
// internal/s3test starts one for tests.
//
//	srv, err := s3local.Start(ctx, s3local.Config{Dir: "out/s3"})
//	defer srv.Stop()
//	err = srv.MakeBucket(ctx, "tailor")
//	st, err := srv.Open(ctx, "tailor", "data")   // a store.Store
//	url := srv.URL("tailor", "data")             // s3://tailor/data?endpoint=http://127.0.0.1:PORT&region=us-east-1
//	cmd.Env = append(os.Environ(), srv.Env()...) // the credentials, for a child process
//
// The credentials are the root account's, random unless given; they are
// never in the URL, and String, GoString and LogValue leave the secret out.
// Objects are plain files under Dir/root/BUCKET/KEY and outlive the server:
// a server started again on the same Dir serves them, whatever its
// credentials.
//
// Two quirks of versitygw v1.8.0 shape this package:
//
//   - Only one gateway may run per process (embedgw keeps package-level
//     state): Start fails while another Server of the process runs.
//   - Its POSIX backend resolves buckets relative to the process's working
//     directory: Start makes Dir/root the working directory and Stop puts
//     back the one Start found. While a Server runs, the process must not
//     use relative paths, and should start child processes with a directory
//     of their own (exec.Cmd.Dir).
package s3local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
	"github.com/versity/versitygw/s3api"

	"github.com/tailorml/tailor/store"
)

// Region is the region the server reports and signs for.
const Region = "us-east-1"

// How object metadata (ETags, content types) is kept: MetaXattr in user
// extended attributes of the object files, MetaSidecar in files under
// Dir/meta (for filesystems without user xattrs).
const (
	MetaXattr   = "xattr"
	MetaSidecar = "sidecar"
)

// ErrRunning means a Server of this process is running already.
var ErrRunning = errors.New("s3local: a server is already running in this process")

// Config is where and how a Server runs.
type Config struct {
	// Dir holds the server's data: Dir/root a directory per bucket with
	// its objects as files, Dir/meta their metadata in sidecar mode. It is
	// made if missing, and kept.
	Dir string
	// Addr is the host:port to listen on; "" is a free port of 127.0.0.1.
	Addr string
	// AccessKey and SecretKey are the root account's credentials; when
	// both are empty, random ones are made.
	AccessKey, SecretKey string
	// Meta is MetaXattr or MetaSidecar; "" takes sidecar if Dir/meta
	// exists (a Dir served in that mode before), else xattr where the
	// filesystem has user extended attributes.
	Meta string
}

// Server is a running S3 gateway.
type Server struct {
	endpoint       string // host:port
	access, secret string
	metaMode       string
	root           string
	wd             string // the working directory before Start

	client *minio.Client
	cancel context.CancelFunc
	done   chan struct{} // closed when the gateway has stopped
	err    error         // why it stopped, once done is closed

	stopOnce sync.Once
	stopErr  error
}

// running is set while a Server of this process runs.
var running atomic.Bool

// Start starts a server as cfg says and returns once it accepts
// connections (ctx bounds the wait, which is at most 20 s). It runs until
// Stop, which must be called.
func Start(ctx context.Context, cfg Config) (srv *Server, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("s3local: no directory")
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, errors.New("s3local: access key and secret key must be given together")
	}
	switch cfg.Meta {
	case "", MetaXattr, MetaSidecar:
	default:
		return nil, fmt.Errorf("s3local: metadata mode %q: want %s or %s", cfg.Meta, MetaXattr, MetaSidecar)
	}
	if !running.CompareAndSwap(false, true) {
		return nil, ErrRunning
	}
	defer func() {
		if err != nil {
			running.Store(false)
		}
	}()
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("s3local: %w", err)
	}
	s := &Server{access: cfg.AccessKey, secret: cfg.SecretKey, root: filepath.Join(dir, "root"), done: make(chan struct{})}
	if s.access == "" {
		s.access, s.secret = "tailor"+randomHex(8), randomHex(20)
	}
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return nil, fmt.Errorf("s3local: %w", err)
	}

	sidecar := filepath.Join(dir, "meta")
	s.metaMode = cfg.Meta
	if s.metaMode == "" {
		s.metaMode = MetaXattr
		if fi, err := os.Stat(sidecar); err == nil && fi.IsDir() || probeXattr(s.root) != nil {
			s.metaMode = MetaSidecar
		}
	}
	var ms meta.MetadataStorer = meta.XattrMeta{}
	opts := posix.PosixOpts{Concurrency: 64}
	if s.metaMode == MetaSidecar {
		if err := os.MkdirAll(sidecar, 0o755); err != nil {
			return nil, fmt.Errorf("s3local: %w", err)
		}
		sc, err := meta.NewSideCar(sidecar)
		if err != nil {
			return nil, fmt.Errorf("s3local: sidecar metadata: %w", err)
		}
		ms, opts.SideCarDir = sc, sidecar
	}

	// posix.New makes the root the working directory (see the package
	// comment); Stop, or a failed start, puts the old one back
	if s.wd, err = os.Getwd(); err != nil {
		return nil, fmt.Errorf("s3local: %w", err)
	}
	be, err := posix.New(s.root, ms, opts)
	if err != nil {
		_ = os.Chdir(s.wd)
		return nil, fmt.Errorf("s3local: posix backend: %w", err)
	}
	defer func() {
		if err != nil {
			be.Shutdown()
			_ = os.Chdir(s.wd)
		}
	}()

	// Without an address, pick a free port and bind it in the gateway;
	// another process may take the port in between, so try a few times.
	for attempt := 0; ; attempt++ {
		s.endpoint = cfg.Addr
		if s.endpoint == "" {
			if s.endpoint, err = freePort(); err != nil {
				return nil, fmt.Errorf("s3local: %w", err)
			}
		} else if err := checkListen(s.endpoint); err != nil {
			return nil, fmt.Errorf("s3local: %w", err)
		}
		err = s.run(ctx, be)
		if err == nil {
			break
		}
		if cfg.Addr != "" || attempt == 2 || !strings.Contains(err.Error(), "bind") {
			return nil, fmt.Errorf("s3local: %w", err)
		}
	}

	s.client, err = minio.New(s.endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.access, s.secret, ""),
		Region:       Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		s.halt()
		return nil, fmt.Errorf("s3local: %w", err)
	}
	return s, nil
}

// run starts the gateway in the background and waits until it listens,
// or fails, or ctx ends.
func (s *Server) run(ctx context.Context, be *posix.Posix) error {
	ready := make(chan struct{})
	var readyOnce sync.Once
	cfg := &embedgw.Config{
		RootUserAccess:    s.access,
		RootUserSecret:    s.secret,
		Region:            Region,
		Ports:             []string{s.endpoint},
		MaxConnections:    256,
		MaxRequests:       128,
		MultipartMaxParts: 10000,
		Quiet:             true,
		// the single root account, as embedgw makes it without an IAM
		// service, but without printing that it does
		IAMService: auth.NewIAMServiceSingle(auth.Account{Access: s.access, Secret: s.secret, Role: auth.RoleAdmin}),
		S3Options: []s3api.Option{s3api.WithOnListen(func() {
			readyOnce.Do(func() { close(ready) })
		})},
	}
	gctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = embedgw.RunVersityGW(gctx, be, cfg)
	}()
	fail := func(err error) error {
		cancel()
		<-done
		return fmt.Errorf("versitygw on %s: %w", s.endpoint, err)
	}
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case <-ready:
	case <-done:
		err := runErr
		if err == nil {
			err = errors.New("gateway stopped at once")
		}
		cancel()
		return fmt.Errorf("versitygw on %s: %w", s.endpoint, err)
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-timer.C:
		return fail(errors.New("not listening after 20s"))
	}
	// OnListen fires just before the first Accept; confirm with a dial.
	for {
		c, err := net.DialTimeout("tcp", s.endpoint, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			return fmt.Errorf("versitygw on %s stopped: %w", s.endpoint, runErr)
		case <-ctx.Done():
			return fail(err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.cancel = cancel
	go func() {
		<-done
		s.err = runErr
		close(s.done)
	}()
	return nil
}

// Stop shuts the gateway down, waits for it (at most 10 s) and puts back
// the working directory Start found. It returns why the gateway had
// stopped if it did so before, or an error if it does not stop. Calling it
// again returns the same.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.halt() })
	return s.stopErr
}

func (s *Server) halt() error {
	var err error
	select {
	case <-s.done:
		if s.err != nil {
			err = fmt.Errorf("s3local: versitygw on %s had stopped: %w", s.endpoint, s.err)
		}
	default:
		s.cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			err = fmt.Errorf("s3local: versitygw on %s did not stop within 10s", s.endpoint)
		}
	}
	if cerr := os.Chdir(s.wd); cerr != nil && err == nil {
		err = fmt.Errorf("s3local: %w", cerr)
	}
	if err == nil || s.isDone() {
		running.Store(false)
	}
	return err
}

func (s *Server) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Done is closed when the gateway has stopped: after Stop, or on its own
// (Err says why).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is why the gateway stopped, once Done is closed (nil after Stop).
func (s *Server) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Endpoint is the server's host:port; it speaks plain HTTP.
func (s *Server) Endpoint() string { return s.endpoint }

// AccessKey is the root account's access key ID.
func (s *Server) AccessKey() string { return s.access }

// SecretKey is the root account's secret key. Never print or log it.
func (s *Server) SecretKey() string { return s.secret }

// MetaMode is how object metadata is kept: MetaXattr or MetaSidecar.
func (s *Server) MetaMode() string { return s.metaMode }

// Root is the directory of the buckets: bucket b's object k is the file
// Root()/b/k.
func (s *Server) Root() string { return s.root }

// Client is a minio-go client with the root credentials.
func (s *Server) Client() *minio.Client { return s.client }

// URL is the store URL of prefix in bucket ("" for the bucket's root):
// s3://bucket/prefix?endpoint=http://HOST:PORT&region=us-east-1. It holds
// no credentials.
func (s *Server) URL(bucket, prefix string) string {
	u := "s3://" + bucket
	if prefix != "" {
		u += "/" + prefix
	}
	return u + "?endpoint=http://" + s.endpoint + "&region=" + Region
}

// Env is the environment that gives a process this server's credentials
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and clears the variables that
// would compete with them (a session token, a profile or credentials file,
// a CA bundle), as KEY=value lines for exec.Cmd.Env.
func (s *Server) Env() []string {
	env := make([]string, 0, len(envCleared)+2)
	for _, k := range envCleared {
		env = append(env, k+"=")
	}
	return append(env, "AWS_ACCESS_KEY_ID="+s.access, "AWS_SECRET_ACCESS_KEY="+s.secret)
}

// envCleared are the variables Env sets empty.
var envCleared = []string{"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE"}

// Getenv is the environment of Env, for store.OpenOptions.Getenv: the
// credentials, and nothing else.
func (s *Server) Getenv(key string) string {
	switch key {
	case "AWS_ACCESS_KEY_ID":
		return s.access
	case "AWS_SECRET_ACCESS_KEY":
		return s.secret
	}
	return ""
}

// Open opens prefix in bucket as a store, with the root credentials.
func (s *Server) Open(ctx context.Context, bucket, prefix string) (store.Store, error) {
	return store.OpenWith(ctx, s.URL(bucket, prefix), store.OpenOptions{Getenv: s.Getenv})
}

// MakeBucket creates the bucket unless it exists.
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	err := s.client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region})
	switch minio.ToErrorResponse(err).Code {
	case "BucketAlreadyOwnedByYou", "BucketAlreadyExists":
		return nil
	}
	if err != nil {
		return fmt.Errorf("s3local: make bucket %s: %w", name, err)
	}
	return nil
}

// String describes the server without its secret.
func (s *Server) String() string {
	return fmt.Sprintf("s3local %s (root %s, access key %s)", s.endpoint, s.root, maskKey(s.access))
}

// GoString is String, so %#v does not print the secret either.
func (s *Server) GoString() string { return "&s3local.Server{" + s.String() + "}" }

// LogValue makes slog log String.
func (s *Server) LogValue() slog.Value { return slog.StringValue(s.String()) }

// maskKey shows the last 4 characters of an access key ID, as the AWS CLI does.
func maskKey(k string) string {
	if len(k) <= 8 {
		return "****"
	}
	return "****" + k[len(k)-4:]
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

// checkListen reports whether addr can be listened on now, with the
// listen error (syscall.EADDRINUSE for a port in use).
func checkListen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
