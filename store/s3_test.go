package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/s3test"
	"github.com/tailorml/tailor/store"
	"github.com/tailorml/tailor/store/storetest"
)

// s3Config is a config for bucket/prefix on srv with its root credentials.
func s3Config(srv *s3test.Server, bucket, prefix string) store.S3Config {
	cfg := store.DefaultS3Config()
	cfg.Bucket, cfg.Prefix = bucket, prefix
	cfg.Endpoint, cfg.TLS, cfg.Region, cfg.Addressing = srv.Endpoint, false, srv.Region, store.S3AddressingPath
	cfg.AccessKey, cfg.SecretKey = srv.AccessKey, srv.SecretKey
	return cfg
}

func newS3(t *testing.T, cfg store.S3Config) *store.S3 {
	t.Helper()
	st, err := store.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewS3(%v): %v", cfg, err)
	}
	return st
}

func TestS3Contract(t *testing.T) {
	srv := s3test.Start(t)
	for _, prefix := range []string{"", "datasets/v1"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			storetest.TestStore(t, func(t *testing.T) store.Store {
				return newS3(t, s3Config(srv, srv.NewBucket(t), prefix))
			})
		})
	}
}

func TestS3PrefixIsolation(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	ctx := context.Background()
	a := newS3(t, s3Config(srv, bucket, "a"))
	ab := newS3(t, s3Config(srv, bucket, "ab"))
	root := newS3(t, s3Config(srv, bucket, ""))
	if err := a.Put(ctx, "x", strings.NewReader("1"), 1); err != nil {
		t.Fatal(err)
	}
	if names, err := ab.List(ctx, ""); err != nil || len(names) != 0 {
		t.Errorf("List under prefix ab = %q, %v; want none (a/x is not under ab/)", names, err)
	}
	if _, err := ab.Stat(ctx, "x"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("Stat(x) under ab = %v, want ErrNotExist", err)
	}
	if names, err := root.List(ctx, ""); err != nil || len(names) != 1 || names[0] != "a/x" {
		t.Errorf("List at the bucket root = %q, %v; want [a/x]", names, err)
	}
}

func TestS3Multipart(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	cfg := s3Config(srv, bucket, "mp")
	cfg.PartSize = 5 << 20
	st := newS3(t, cfg)
	ctx := context.Background()

	data := make([]byte, 2*cfg.PartSize+12345) // three parts
	rand.Read(data)
	if err := st.Put(ctx, "big.shard", io.MultiReader(bytes.NewReader(data[:100]), bytes.NewReader(data[100:])), int64(len(data))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if n, err := st.Stat(ctx, "big.shard"); err != nil || n != int64(len(data)) {
		t.Fatalf("Stat = %d, %v; want %d", n, err, len(data))
	}
	if got := readAll(t, st, "big.shard"); !bytes.Equal(got, data) {
		t.Fatalf("Get returned %d bytes that differ from the %d put", len(got), len(data))
	}

	// A reader longer or shorter than the size fails in the last part, and
	// the old object stays.
	longer := append(bytes.Clone(data), 'x')
	longer[0] ^= 0xff
	if err := st.Put(ctx, "big.shard", bytes.NewReader(longer), int64(len(data))); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("Put of %d bytes with size %d = %v, want a length error", len(longer), len(data), err)
	}
	if err := st.Put(ctx, "big.shard", bytes.NewReader(longer[:len(data)-1]), int64(len(data))); err == nil || !strings.Contains(err.Error(), "reader gave") {
		t.Errorf("Put of %d bytes with size %d = %v, want a length error", len(data)-1, len(data), err)
	}
	if got := readAll(t, st, "big.shard"); !bytes.Equal(got, data) {
		t.Error("object changed by failed multipart Puts")
	}
	// The failed uploads were aborted, not left to accumulate parts.
	for up := range srv.Client().ListIncompleteUploads(ctx, bucket, "mp/", true) {
		if up.Err != nil {
			t.Fatalf("ListIncompleteUploads: %v", up.Err)
		}
		t.Errorf("multipart upload of %s left behind", up.Key)
	}
}

func readAll(t *testing.T, st store.Store, name string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", name, err)
	}
	return b
}

func TestS3Errors(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	ctx := context.Background()

	t.Run("WrongSecret", func(t *testing.T) {
		cfg := s3Config(srv, bucket, "p")
		cfg.SecretKey = "wrong-secret-" + srv.SecretKey[:6]
		_, err := store.NewS3(ctx, cfg)
		if !errors.Is(err, store.ErrAccessDenied) {
			t.Fatalf("NewS3 with a wrong secret = %v, want ErrAccessDenied", err)
		}
		for _, secret := range []string{cfg.SecretKey, srv.SecretKey} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains the secret", err)
			}
		}
		if !strings.Contains(err.Error(), "refused the credentials") || !strings.Contains(err.Error(), srv.Endpoint) {
			t.Errorf("error %q does not say the credentials were refused by %s", err, srv.Endpoint)
		}
	})
	t.Run("WrongAccessKey", func(t *testing.T) {
		cfg := s3Config(srv, bucket, "p")
		cfg.AccessKey = "nobody-at-all"
		if _, err := store.NewS3(ctx, cfg); !errors.Is(err, store.ErrAccessDenied) {
			t.Fatalf("NewS3 with an unknown access key = %v, want ErrAccessDenied", err)
		} else if strings.Contains(err.Error(), srv.SecretKey) {
			t.Errorf("error %q contains the secret", err)
		}
	})
	t.Run("MissingBucket", func(t *testing.T) {
		_, err := store.NewS3(ctx, s3Config(srv, "no-such-bucket-here", "p"))
		if !errors.Is(err, store.ErrNoBucket) || !strings.Contains(err.Error(), `"no-such-bucket-here"`) {
			t.Fatalf("NewS3 of a missing bucket = %v, want ErrNoBucket naming it", err)
		}
	})
	t.Run("MissingObject", func(t *testing.T) {
		st := newS3(t, s3Config(srv, bucket, "p"))
		if _, err := st.Get(ctx, "shards/none.shard"); !errors.Is(err, store.ErrNotExist) {
			t.Errorf("Get(missing) = %v, want ErrNotExist", err)
		}
		if _, err := st.Stat(ctx, "none"); !errors.Is(err, store.ErrNotExist) {
			t.Errorf("Stat(missing) = %v, want ErrNotExist", err)
		}
		if err := st.Delete(ctx, "none"); err != nil {
			t.Errorf("Delete(missing) = %v, want nil", err)
		}
	})
	t.Run("CanceledPut", func(t *testing.T) {
		st := newS3(t, s3Config(srv, bucket, "p"))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := st.Put(cctx, "x", strings.NewReader("data"), 4); !errors.Is(err, context.Canceled) {
			t.Errorf("Put with a canceled context = %v, want context.Canceled", err)
		}
	})
}

func TestS3Unreachable(t *testing.T) {
	// A port nobody listens on: connections are refused at once, so the
	// retries and their backoff bound the time.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	cfg := store.DefaultS3Config()
	cfg.Bucket, cfg.Endpoint, cfg.TLS, cfg.Region = "bucket", closed, false, "us-east-1"
	cfg.AccessKey, cfg.SecretKey = "AKIAEXAMPLEKEY123", "secret-never-shown"
	start := time.Now()
	_, err = store.NewS3(context.Background(), cfg)
	elapsed := time.Since(start)
	if !errors.Is(err, store.ErrUnreachable) || !strings.Contains(err.Error(), closed) {
		t.Fatalf("NewS3 on a closed port = %v, want ErrUnreachable naming %s", err, closed)
	}
	if strings.Contains(err.Error(), cfg.SecretKey) {
		t.Errorf("error %q contains the secret", err)
	}
	if elapsed > 5*time.Second {
		t.Errorf("giving up took %v, want well under 5s", elapsed)
	}
	t.Logf("closed port: %v after %v", err, elapsed.Round(time.Millisecond))
}

func TestS3HonoursContext(t *testing.T) {
	// A server that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	cfg := store.DefaultS3Config()
	cfg.Bucket, cfg.Endpoint, cfg.TLS, cfg.Region = "bucket", l.Addr().String(), false, "us-east-1"
	cfg.AccessKey, cfg.SecretKey = "AKIAEXAMPLEKEY123", "secret-never-shown"
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = store.NewS3(ctx, cfg)
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NewS3 on a silent server = %v, want context.DeadlineExceeded", err)
	}
	if elapsed > 3*time.Second {
		t.Errorf("returned after %v, want soon after the 300ms deadline", elapsed)
	}
}

func TestS3Credentials(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	bucket := srv.NewBucket(t)
	ctx := context.Background()
	dir := t.TempDir()
	credFile := filepath.Join(dir, "credentials")
	content := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = wrong-default-secret\n\n[tailor]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n[half]\naws_access_key_id = %s\n",
		srv.AccessKey, srv.AccessKey, srv.SecretKey, srv.AccessKey)
	if err := os.WriteFile(credFile, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	url := srv.StoreURL(bucket, "c")
	open := func(extra string) (store.Store, error) { return store.Open(ctx, url+extra) }

	t.Run("Environment", func(t *testing.T) {
		st, err := open("")
		if err != nil {
			t.Fatalf("Open with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: %v", err)
		}
		if err := st.Put(ctx, "x", strings.NewReader("1"), 1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("FileProfileBeatsEnvironment", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-env-secret")
		if _, err := open(""); !errors.Is(err, store.ErrAccessDenied) {
			t.Fatalf("Open with a wrong env secret = %v, want ErrAccessDenied", err)
		}
		if _, err := open("&credentials_file=" + credFile + "&profile=tailor"); err != nil {
			t.Fatalf("Open with profile tailor: %v", err)
		}
		_, err := open("&credentials_file=" + credFile) // [default] has a wrong secret
		if !errors.Is(err, store.ErrAccessDenied) || strings.Contains(err.Error(), "wrong-default-secret") {
			t.Fatalf("Open with profile default = %v, want ErrAccessDenied without the secret", err)
		}
	})
	t.Run("FlagSettings", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-env-secret")
		st, err := store.OpenWith(ctx, url, store.OpenOptions{S3: map[string]string{"credentials_file": credFile, "profile": "tailor"}})
		if err != nil {
			t.Fatalf("OpenWith profile settings: %v", err)
		}
		if _, err := st.Stat(ctx, "x"); err != nil {
			t.Errorf("Stat(x): %v", err)
		}
	})
	t.Run("SharedFileFromEnvironment", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", credFile)
		t.Setenv("AWS_PROFILE", "tailor")
		if _, err := open(""); err != nil {
			t.Fatalf("Open with AWS_SHARED_CREDENTIALS_FILE and AWS_PROFILE: %v", err)
		}
	})
	t.Run("BadProfiles", func(t *testing.T) {
		for _, tt := range []struct{ extra, want string }{
			{"&credentials_file=" + credFile + "&profile=nope", `no profile "nope"`},
			{"&credentials_file=" + credFile + "&profile=half", `profile "half"`},
			{"&credentials_file=" + filepath.Join(dir, "missing") + "&profile=tailor", "no such file"},
		} {
			_, err := open(tt.extra)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open(...%s) = %v, want an error containing %q", tt.extra, err, tt.want)
			} else if strings.Contains(err.Error(), srv.SecretKey) {
				t.Errorf("error %q contains the secret", err)
			}
		}
	})
}

func TestS3SecretsNeverPrinted(t *testing.T) {
	srv := s3test.Start(t)
	cfg := s3Config(srv, srv.NewBucket(t), "p")
	cfg.SessionToken = "" // versitygw has no session tokens; checked below on the config only
	st := newS3(t, cfg)
	withToken := cfg
	withToken.SessionToken = "session-token-value-123"
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("store", "cfg", withToken, "store", st)
	for _, s := range []string{
		fmt.Sprint(withToken), fmt.Sprintf("%+v", withToken), fmt.Sprintf("%#v", withToken),
		fmt.Sprint(st), fmt.Sprintf("%+v", st), fmt.Sprintf("%#v", st), logged.String(),
	} {
		if strings.Contains(s, srv.SecretKey) || strings.Contains(s, withToken.SessionToken) {
			t.Errorf("printed config holds a secret: %s", s)
		}
		if !strings.Contains(s, "s3://") {
			t.Errorf("printed config %q does not name the store", s)
		}
	}
}

func TestParseS3URL(t *testing.T) {
	home := t.TempDir()
	envBase := map[string]string{"HOME": home, "AWS_ACCESS_KEY_ID": "AKIAENVKEY00001", "AWS_SECRET_ACCESS_KEY": "env-secret"}
	type want struct {
		bucket, prefix, endpoint, region, addressing string
		tls                                          bool
		access, file, profile                        string
		partSize                                     int64
	}
	def := want{bucket: "bkt", prefix: "p", endpoint: store.DefaultS3Endpoint, addressing: "auto", tls: true, access: "AKIAENVKEY00001", partSize: store.DefaultS3PartSize}
	with := func(f func(*want)) want { w := def; f(&w); return w }
	tests := []struct {
		name    string
		url     string
		env     map[string]string // added to envBase; "" deletes
		flags   map[string]string
		want    want
		wantErr string
	}{
		{name: "defaults", url: "s3://bkt/p", want: def},
		{name: "trailing slash and nested prefix", url: "s3://bkt/ds/v1/", want: with(func(w *want) { w.prefix = "ds/v1" })},
		{name: "bucket root", url: "s3://bkt", want: with(func(w *want) { w.prefix = "" })},
		{name: "all settings", url: "s3://bkt/p?endpoint=127.0.0.1:9000&tls=false&region=eu-west-1&path_style=true&part_size=8MiB",
			want: with(func(w *want) {
				w.endpoint, w.tls, w.region, w.addressing, w.partSize = "127.0.0.1:9000", false, "eu-west-1", "path", 8<<20
			})},
		{name: "http endpoint URL", url: "s3://bkt/p?endpoint=http://minio:9000", want: with(func(w *want) { w.endpoint, w.tls = "minio:9000", false })},
		{name: "virtual host", url: "s3://bkt/p?path_style=false", want: with(func(w *want) { w.addressing = "virtual" })},
		{name: "AWS_ENDPOINT_URL", url: "s3://bkt/p", env: map[string]string{"AWS_ENDPOINT_URL": "http://env:1"},
			want: with(func(w *want) { w.endpoint, w.tls = "env:1", false })},
		{name: "TAILOR_S3_ENDPOINT beats AWS_ENDPOINT_URL", url: "s3://bkt/p", env: map[string]string{"AWS_ENDPOINT_URL": "http://env:1", "TAILOR_S3_ENDPOINT": "https://tailor:2"},
			want: with(func(w *want) { w.endpoint = "tailor:2" })},
		{name: "flag beats env", url: "s3://bkt/p", env: map[string]string{"TAILOR_S3_ENDPOINT": "http://env:1"}, flags: map[string]string{"endpoint": "http://flag:2"},
			want: with(func(w *want) { w.endpoint, w.tls = "flag:2", false })},
		{name: "URL beats flag; no scheme means TLS", url: "s3://bkt/p?endpoint=url:3", flags: map[string]string{"endpoint": "http://flag:2"},
			want: with(func(w *want) { w.endpoint = "url:3" })},
		{name: "URL tls=false applies to a flag endpoint", url: "s3://bkt/p?tls=false", flags: map[string]string{"endpoint": "flag:2"},
			want: with(func(w *want) { w.endpoint, w.tls = "flag:2", false })},
		{name: "AWS_CA_BUNDLE over TLS", url: "s3://bkt/p", env: map[string]string{"AWS_CA_BUNDLE": "/ca.pem"}, want: def},
		{name: "AWS_CA_BUNDLE ignored without TLS", url: "s3://bkt/p?tls=false", env: map[string]string{"AWS_CA_BUNDLE": "/ca.pem"}, want: with(func(w *want) { w.tls = false })},
		{name: "region from env", url: "s3://bkt/p", env: map[string]string{"AWS_DEFAULT_REGION": "x-1", "AWS_REGION": "y-2"},
			want: with(func(w *want) { w.region = "y-2" })},
		{name: "profile setting beats env keys", url: "s3://bkt/p?profile=prod", want: with(func(w *want) {
			w.access, w.file, w.profile = "", filepath.Join(home, ".aws", "credentials"), "prod"
		})},
		{name: "credentials file setting", url: "s3://bkt/p?credentials_file=/etc/creds", want: with(func(w *want) { w.access, w.file = "", "/etc/creds" })},
		{name: "AWS_PROFILE without keys", url: "s3://bkt/p", env: map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_PROFILE": "dev", "AWS_SHARED_CREDENTIALS_FILE": "/x/creds"},
			want: with(func(w *want) { w.access, w.file, w.profile = "", "/x/creds", "dev" })},
		{name: "anonymous", url: "s3://bkt/p?anonymous=true", want: with(func(w *want) { w.access = "" })},
		{name: "no credentials", url: "s3://bkt/p", env: map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, wantErr: "none found"},
		{name: "half env keys", url: "s3://bkt/p", env: map[string]string{"AWS_SECRET_ACCESS_KEY": ""}, wantErr: "together"},
		{name: "secret in userinfo", url: "s3://AKIA:topsecret@bkt/p", wantErr: "do not belong in the URL"},
		{name: "secret in query", url: "s3://bkt/p?secret_key=topsecret", wantErr: "do not belong in the URL"},
		{name: "bad escape with secret", url: "s3://AKIA:topsecret@bkt/%zz", wantErr: "invalid URL escape"},
		{name: "unknown setting", url: "s3://bkt/p?endpiont=x:1", wantErr: `unknown setting "endpiont"`},
		{name: "unknown flag setting", url: "s3://bkt/p", flags: map[string]string{"nope": "1"}, wantErr: `"nope"`},
		{name: "repeated setting", url: "s3://bkt/p?region=a&region=b", wantErr: "2 times"},
		{name: "scheme and tls disagree", url: "s3://bkt/p?endpoint=http://h:1&tls=true", wantErr: "disagree"},
		{name: "bad tls", url: "s3://bkt/p?tls=maybe", wantErr: "true or false"},
		{name: "bad endpoint scheme", url: "s3://bkt/p?endpoint=ftp://h", wantErr: "scheme"},
		{name: "endpoint with path", url: "s3://bkt/p?endpoint=http://h:1/x", wantErr: "host[:port]"},
		{name: "bad port", url: "s3://bkt/p?endpoint=h:99999", wantErr: "port"},
		{name: "part size too small", url: "s3://bkt/p?part_size=1MiB", wantErr: "part size"},
		{name: "ca file without TLS", url: "s3://bkt/p?tls=false&ca_file=/ca.pem", wantErr: "TLS is off"},
		{name: "no bucket", url: "s3:///p", wantErr: "bucket name is empty"},
		{name: "upper-case bucket", url: "s3://Bucket/p", wantErr: "lower-case"},
		{name: "short bucket", url: "s3://ab/p", wantErr: "3 to 63"},
		{name: "bucket with port", url: "s3://bkt:9000/p", wantErr: "only lower-case"},
		{name: "IP bucket", url: "s3://10.0.0.1/p", wantErr: "IP address"},
		{name: "dot-dot prefix", url: "s3://bkt/a/../x", wantErr: "s3 prefix"},
		{name: "empty element prefix", url: "s3://bkt/a//x", wantErr: "s3 prefix"},
		{name: "reserved prefix", url: "s3://bkt/.tailor-tmp/x", wantErr: "s3 prefix"},
		{name: "not s3", url: "gs://b/p", wantErr: "want s3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range envBase {
				env[k] = v
			}
			for k, v := range tt.env {
				env[k] = v
			}
			cfg, err := store.ParseS3URL(tt.url, store.OpenOptions{S3: tt.flags, Getenv: func(k string) string { return env[k] }})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseS3URL(%q) error = %v, want one containing %q", tt.url, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "env-secret") {
					t.Errorf("error %q contains a secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseS3URL(%q): %v", tt.url, err)
			}
			got := want{cfg.Bucket, cfg.Prefix, cfg.Endpoint, cfg.Region, cfg.Addressing, cfg.TLS, cfg.AccessKey, cfg.CredentialsFile, cfg.Profile, cfg.PartSize}
			if got != tt.want {
				t.Errorf("ParseS3URL(%q)\n got %+v\nwant %+v", tt.url, got, tt.want)
			}
			if wantCA := env["AWS_CA_BUNDLE"]; cfg.TLS && cfg.CAFile != wantCA || !cfg.TLS && cfg.CAFile != "" {
				t.Errorf("CAFile = %q (TLS %v), AWS_CA_BUNDLE %q", cfg.CAFile, cfg.TLS, wantCA)
			}
			if tt.want.access != "" && cfg.SecretKey != "env-secret" {
				t.Errorf("secret key not taken from the environment")
			}
		})
	}
}

func TestOpenS3NeedsABucket(t *testing.T) {
	// Open parses before it connects: a bad URL fails without network.
	_, err := store.Open(context.Background(), "s3://Not_A_Bucket/x")
	if err == nil || !strings.Contains(err.Error(), "bucket name") {
		t.Errorf("Open(s3://Not_A_Bucket/x) = %v, want a bucket name error", err)
	}
}

func TestS3OddNames(t *testing.T) {
	srv := s3test.Start(t)
	st := newS3(t, s3Config(srv, srv.NewBucket(t), "odd prefix/ü"))
	ctx := context.Background()
	names := []string{"a b/c+d%20e.shard", "q?x#y=1&z", "dé/ü/ß.json", "tilde~/semi;colon"}
	for _, n := range names {
		if err := st.Put(ctx, n, strings.NewReader(n), int64(len(n))); err != nil {
			t.Fatalf("Put(%q): %v", n, err)
		}
		if got := string(readAll(t, st, n)); got != n {
			t.Errorf("Get(%q) = %q", n, got)
		}
	}
	got, err := st.List(ctx, "")
	want := slices.Sorted(slices.Values(names))
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("List = %q, %v; want %q", got, err, want)
	}
}

func TestS3CAFile(t *testing.T) {
	// A TLS server with a self-signed certificate, answering every request
	// with an empty listing: enough to see whether the client trusts it.
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bucket</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`)
	}))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	ts.StartTLS()
	defer ts.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := store.DefaultS3Config()
	cfg.Bucket, cfg.Endpoint, cfg.Region, cfg.Addressing = "bucket", strings.TrimPrefix(ts.URL, "https://"), "us-east-1", store.S3AddressingPath
	cfg.AccessKey, cfg.SecretKey = "AKIAEXAMPLEKEY123", "secret-never-shown"
	ctx := context.Background()

	_, err := store.NewS3(ctx, cfg)
	if !errors.Is(err, store.ErrUnreachable) || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("NewS3 of a self-signed endpoint without a CA file = %v, want ErrUnreachable with a ca_file hint", err)
	}
	cfg.CAFile = caFile
	if _, err := store.NewS3(ctx, cfg); err != nil {
		t.Errorf("NewS3 with the CA file: %v", err)
	}
	cfg.TLS = false
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted a CA file without TLS")
	}
	cfg.CAFile, cfg.TLS = "", true
	_, err = store.NewS3(ctx, cfg)
	if err == nil {
		t.Fatal("NewS3 trusted a self-signed certificate")
	}

	// TLS to a plain HTTP port, and plain HTTP to a TLS port, get hints.
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	cfg.Endpoint = strings.TrimPrefix(plain.URL, "http://")
	if _, err := store.NewS3(ctx, cfg); err == nil || !strings.Contains(err.Error(), cfg.Endpoint) || !strings.Contains(err.Error(), "tls=false") {
		t.Errorf("NewS3 with TLS to a plain HTTP server = %v, want an error naming it with a tls=false hint", err)
	}
	cfg.Endpoint, cfg.TLS = strings.TrimPrefix(ts.URL, "https://"), false
	if _, err := store.NewS3(ctx, cfg); err == nil || !strings.Contains(err.Error(), cfg.Endpoint) || !strings.Contains(err.Error(), "speaks HTTPS") {
		t.Errorf("NewS3 with plain HTTP to a TLS server = %v, want an error naming it with a TLS hint", err)
	}
}

func TestS3PutUnreachable(t *testing.T) {
	srv := s3test.Start(t)
	proxy := startProxy(t, srv.Endpoint)
	cfg := s3Config(srv, srv.NewBucket(t), "p")
	cfg.Endpoint = proxy.addr()
	st := newS3(t, cfg)
	ctx := context.Background()
	if err := st.Put(ctx, "x", strings.NewReader("1"), 1); err != nil {
		t.Fatalf("Put through the proxy: %v", err)
	}
	proxy.stop()
	start := time.Now()
	err := st.Put(ctx, "y", strings.NewReader("2"), 1)
	if !errors.Is(err, store.ErrUnreachable) || !strings.Contains(err.Error(), proxy.addr()) {
		t.Errorf("Put with the endpoint gone = %v, want ErrUnreachable naming %s", err, proxy.addr())
	}
	if _, err := st.Get(ctx, "x"); !errors.Is(err, store.ErrUnreachable) {
		t.Errorf("Get with the endpoint gone = %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failing took %v", d)
	}
}

// tcpProxy forwards connections to a target until stopped.
type tcpProxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l}
	t.Cleanup(p.stop)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *tcpProxy) addr() string { return p.l.Addr().String() }

func (p *tcpProxy) stop() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestS3ConfigValidate(t *testing.T) {
	valid := func() store.S3Config {
		c := store.DefaultS3Config()
		c.Bucket, c.AccessKey, c.SecretKey = "bucket", "AKIAEXAMPLEKEY123", "s3cr3t-value"
		return c
	}
	if c := valid(); c.Validate() != nil {
		t.Fatalf("valid config: %v", c.Validate())
	}
	tests := []struct {
		name    string
		mod     func(*store.S3Config)
		wantErr string
	}{
		{"endpoint with scheme", func(c *store.S3Config) { c.Endpoint = "https://h" }, "without a scheme"},
		{"empty endpoint", func(c *store.S3Config) { c.Endpoint = "" }, "endpoint is empty"},
		{"bad addressing", func(c *store.S3Config) { c.Addressing = "dns" }, "addressing"},
		{"anonymous with keys", func(c *store.S3Config) { c.Anonymous = true }, "both set"},
		{"secret without access key", func(c *store.S3Config) { c.AccessKey = "" }, "together"},
		{"token without keys", func(c *store.S3Config) { c.AccessKey, c.SecretKey, c.SessionToken = "", "", "tok" }, "session token"},
		{"no credentials", func(c *store.S3Config) { c.AccessKey, c.SecretKey = "", "" }, "none found"},
		{"part too large", func(c *store.S3Config) { c.PartSize = 6 << 30 }, "part size"},
		{"no attempts", func(c *store.S3Config) { c.MaxAttempts = 0 }, "attempts"},
		{"zero timeout", func(c *store.S3Config) { c.DialTimeout = 0 }, "timeouts"},
		{"bad prefix", func(c *store.S3Config) { c.Prefix = "/abs" }, "prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cr3t-value") {
				t.Errorf("error %q contains the secret", err)
			}
		})
	}
}
