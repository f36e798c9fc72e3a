package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is a Store under a prefix of an S3 bucket, on minio-go. Put is a
// single PUT up to the part size and a multipart upload above it; either is
// atomic for readers. Get streams. It is safe for concurrent use.
type S3 struct {
	cfg    S3Config
	client *minio.Client
	core   minio.Core
	keyPfx string // cfg.Prefix + "/", or ""
}

var _ Store = (*S3)(nil)

// NewS3 connects to the bucket cfg names and checks that it exists and
// that the credentials are accepted, by listing one key under the prefix
// (so they need list permission; one request, two without Region).
// Missing buckets give ErrNoBucket, refused credentials ErrAccessDenied, an
// unreachable endpoint ErrUnreachable.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Location(), err)
	}
	creds, err := s3Credentials(&cfg)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Location(), err)
	}
	tr, err := minio.DefaultTransport(cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Location(), err)
	}
	tr.DialContext = (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = cfg.DialTimeout
	tr.ResponseHeaderTimeout = cfg.ResponseTimeout
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("open %s: ca file: %w", cfg.Location(), err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("open %s: ca file %s holds no PEM certificates", cfg.Location(), cfg.CAFile)
		}
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	lookup := minio.BucketLookupAuto
	switch cfg.Addressing {
	case S3AddressingPath:
		lookup = minio.BucketLookupPath
	case S3AddressingVirtual:
		lookup = minio.BucketLookupDNS
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       cfg.TLS,
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   cfg.MaxAttempts,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Location(), err)
	}
	s := &S3{cfg: cfg, client: client, core: minio.Core{Client: client}}
	if cfg.Prefix != "" {
		s.keyPfx = cfg.Prefix + "/"
	}
	// A one-key listing rather than HEAD bucket: a HEAD error has no body,
	// so a 404 would not say whether the bucket or the access key is
	// unknown (versitygw answers an unknown key with 404).
	for obj := range client.ListObjectsIter(ctx, cfg.Bucket, minio.ListObjectsOptions{Prefix: s.keyPfx, MaxKeys: 1}) {
		if obj.Err != nil {
			return nil, s.wrap(ctx, "open", "", obj.Err)
		}
		break
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Location(), err)
	}
	return s, nil
}

// s3Credentials turns cfg's credential settings into a minio-go provider
// and checks that a credentials file yields keys.
func s3Credentials(cfg *S3Config) (*credentials.Credentials, error) {
	switch {
	case cfg.Anonymous:
		return credentials.NewStaticV4("", "", ""), nil
	case cfg.AccessKey != "":
		return credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken), nil
	}
	profile := profileOrDefault(cfg.Profile)
	creds := credentials.NewFileAWSCredentials(cfg.CredentialsFile, profile)
	v, err := creds.GetWithContext(nil)
	if err != nil {
		// Parse errors of the INI reader may quote a line of the file, and
		// so a secret: only file system errors are passed on.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("credentials file: %w", err)
		}
		if strings.Contains(err.Error(), "does not exist") {
			return nil, fmt.Errorf("credentials file %s has no profile %q", cfg.CredentialsFile, profile)
		}
		return nil, fmt.Errorf("credentials file %s: cannot read profile %q (malformed file or incomplete profile)", cfg.CredentialsFile, profile)
	}
	if v.AccessKeyID == "" || v.SecretAccessKey == "" {
		return nil, fmt.Errorf("credentials file %s: profile %q has no aws_access_key_id and aws_secret_access_key", cfg.CredentialsFile, profile)
	}
	return creds, nil
}

// String describes the store without secrets.
func (s *S3) String() string { return s.cfg.String() }

// GoString is String.
func (s *S3) GoString() string { return "&store.S3{" + s.cfg.String() + "}" }

// LogValue makes slog log String.
func (s *S3) LogValue() slog.Value { return slog.StringValue(s.cfg.String()) }

// Location is the store's s3://bucket/prefix.
func (s *S3) Location() string { return s.cfg.Location() }

func (s *S3) key(op, name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	return s.keyPfx + name, nil
}

// wrap turns a minio-go error into one that names the operation and object
// and matches ErrNotExist, ErrNoBucket, ErrAccessDenied, ErrUnreachable or
// the context's error. It never includes credentials.
func (s *S3) wrap(ctx context.Context, op, name string, err error) error {
	what := op + " " + s.cfg.Location()
	if name != "" {
		what = fmt.Sprintf("%s %q", op, name)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: s3 %s: %w (last error: %v)", what, s.cfg.endpointURL(), ctxErr, err)
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchKey || resp.Code == "NotFound" && name != "":
		return fmt.Errorf("%s: %w", what, ErrNotExist)
	case resp.Code == minio.NoSuchBucket:
		return fmt.Errorf("%s: bucket %q does not exist on %s: %w", what, s.cfg.Bucket, s.cfg.endpointURL(), ErrNoBucket)
	case resp.StatusCode == http.StatusForbidden || isAuthCode(resp.Code):
		return fmt.Errorf("%s: %s refused the credentials (%s) for bucket %q: %s: %s: %w",
			what, s.cfg.endpointURL(), s.cfg.credentialsDesc(), s.cfg.Bucket, resp.Code, strings.TrimSuffix(resp.Message, "."), ErrAccessDenied)
	case resp.StatusCode == http.StatusBadRequest && !s.cfg.TLS && strings.Contains(resp.Message, "HTTPS"):
		return fmt.Errorf("%s: s3 %s: %s (it speaks HTTPS: drop tls=false or use an https:// endpoint): %w", what, s.cfg.endpointURL(), resp.Code, err)
	case resp.Code != "":
		return fmt.Errorf("%s: s3 %s: %s: %w", what, s.cfg.endpointURL(), resp.Code, err)
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		hint := ""
		var ua x509.UnknownAuthorityError
		var cv *tls.CertificateVerificationError
		switch {
		case errors.As(err, &ua) || errors.As(err, &cv):
			hint = " (a self-signed endpoint needs ca_file)"
		case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"),
			strings.Contains(err.Error(), "does not look like a TLS handshake"):
			hint = " (it speaks plain HTTP: set tls=false or an http:// endpoint)"
		}
		after := ""
		if s.cfg.MaxAttempts > 1 {
			after = fmt.Sprintf(" after %d attempts", s.cfg.MaxAttempts)
		}
		return fmt.Errorf("%s: cannot reach s3 endpoint %s%s%s: %w: %w",
			what, s.cfg.endpointURL(), after, hint, unwrapURLError(err), ErrUnreachable)
	}
	return fmt.Errorf("%s: s3 %s: %w", what, s.cfg.endpointURL(), err)
}

// unwrapURLError drops url.Error's method and URL, which errors already name.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func isAuthCode(code string) bool {
	switch code {
	case "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken",
		"ExpiredToken", "TokenRefreshRequired", "InvalidSecurity", "AuthorizationHeaderMalformed",
		"XAdminUserNotFound": // versitygw's answer to an unknown access key, with status 404
		return true
	}
	return false
}

// isNetError reports whether err is a failure to talk to the endpoint, as
// opposed to an answer from it.
func isNetError(err error) bool {
	if minio.ToErrorResponse(err).Code != "" {
		return false
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}

// Get implements Store. The object streams from the service as it is read.
func (s *S3) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return s.getFrom(ctx, name, 0)
}

// getFrom is Get from byte off on (a range request), for WithRetry.
func (s *S3) getFrom(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	key, err := s.key("get", name)
	if err != nil {
		return nil, err
	}
	var opts minio.GetObjectOptions
	if off > 0 {
		if err := opts.SetRange(off, 0); err != nil {
			return nil, fmt.Errorf("get %q: %w", name, err)
		}
	}
	body, _, _, err := s.core.GetObject(ctx, s.cfg.Bucket, key, opts)
	if err != nil {
		if off > 0 && minio.ToErrorResponse(err).Code == "InvalidRange" {
			return io.NopCloser(bytes.NewReader(nil)), nil // the break came at the very end
		}
		return nil, s.wrap(ctx, "get", name, err)
	}
	return body, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, name string) (int64, error) {
	key, err := s.key("stat", name)
	if err != nil {
		return 0, err
	}
	info, err := s.client.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return 0, s.wrap(ctx, "stat", name, err)
	}
	return info.Size, nil
}

// List implements Store. Keys under the prefix that are not valid object
// names (such as "dir/" folder markers made by other tools) are left out.
func (s *S3) List(ctx context.Context, prefix string) ([]string, error) {
	var names []string
	for obj := range s.client.ListObjectsIter(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.keyPfx + prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, s.wrap(ctx, "list", prefix, obj.Err)
		}
		name, ok := strings.CutPrefix(obj.Key, s.keyPfx)
		if !ok || !strings.HasPrefix(name, prefix) || ValidName(name) != nil {
			continue
		}
		names = append(names, name)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	slices.Sort(names)
	return names, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, name string) error {
	key, err := s.key("delete", name)
	if err != nil {
		return err
	}
	err = s.client.RemoveObject(ctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{})
	if err == nil {
		return nil
	}
	if err = s.wrap(ctx, "delete", name, err); errors.Is(err, ErrNotExist) {
		return nil // S3 itself answers 204 for a missing key; some servers say 404
	}
	return err
}
