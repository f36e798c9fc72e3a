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
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Defaults of S3Config.
const (
	DefaultS3Endpoint        = "s3.amazonaws.com"
	DefaultS3PartSize        = 16 << 20
	DefaultS3MaxAttempts     = 3
	DefaultS3DialTimeout     = 10 * time.Second
	DefaultS3ResponseTimeout = time.Minute

	minS3PartSize = 5 << 20 // S3's smallest part (except the last)
	maxS3PartSize = 5 << 30 // and its largest
)

// Addressing styles of S3Config.Addressing.
const (
	S3AddressingAuto    = "auto"    // virtual-host style for AWS and Google, path style elsewhere
	S3AddressingPath    = "path"    // https://endpoint/bucket/key
	S3AddressingVirtual = "virtual" // https://bucket.endpoint/key
)

// S3Config configures an S3. Start from DefaultS3Config; ParseS3URL
// builds one from an s3:// URL, flags and the environment (see S3.md).
//
// String, GoString and LogValue never show the secret key or session token,
// so a config may be printed and logged.
type S3Config struct {
	// Bucket is the bucket's name; it must exist.
	Bucket string
	// Prefix is the key prefix the store lives under, a '/'-separated path
	// without leading or trailing '/' ("" for the bucket's root): object
	// name n is stored under the key Prefix + "/" + n.
	Prefix string
	// Endpoint is the service's host or host:port, without a scheme.
	Endpoint string
	// TLS selects HTTPS (true) or plain HTTP.
	TLS bool
	// CAFile is a PEM file of extra CA certificates to trust, for
	// self-signed endpoints; the system's roots stay trusted.
	CAFile string
	// Region is the signing region; "" asks the service (one
	// GetBucketLocation request per store).
	Region string
	// Addressing is how the bucket is put in request URLs:
	// S3AddressingAuto, S3AddressingPath or S3AddressingVirtual.
	Addressing string

	// AccessKey, SecretKey and SessionToken are static credentials. When
	// AccessKey is empty, CredentialsFile and Profile name a profile in an
	// AWS shared credentials file, or Anonymous must be set.
	AccessKey    string
	SecretKey    string
	SessionToken string
	// CredentialsFile is an AWS shared credentials file (INI: [profile]
	// with aws_access_key_id, aws_secret_access_key, aws_session_token).
	CredentialsFile string
	// Profile is the section of CredentialsFile to use ("default" if empty).
	Profile string
	// Anonymous sends unsigned requests, for public buckets.
	Anonymous bool

	// PartSize is the multipart upload part size: objects up to PartSize
	// bytes go up in one PUT, larger ones in parts of PartSize bytes,
	// each buffered in memory once. 5 MiB to 5 GiB.
	PartSize int64
	// MaxAttempts bounds the tries of a request that failed on the
	// network or with a retryable S3 error (with exponential backoff of
	// 0.2 s to 1 s between tries). At least 1.
	MaxAttempts int
	// DialTimeout bounds connecting (TCP and TLS) per try.
	DialTimeout time.Duration
	// ResponseTimeout bounds the wait for a response's headers per try;
	// reading a body is bounded only by the context.
	ResponseTimeout time.Duration

	// credSource says where the credentials came from, for messages.
	credSource string
}

// DefaultS3Config returns the defaults: AWS's endpoint over HTTPS, the
// region asked from the service, automatic addressing, 16 MiB parts, 3
// attempts, 10 s to connect and 1 min to the first response byte.
func DefaultS3Config() S3Config {
	return S3Config{
		Endpoint:        DefaultS3Endpoint,
		TLS:             true,
		Addressing:      S3AddressingAuto,
		PartSize:        DefaultS3PartSize,
		MaxAttempts:     DefaultS3MaxAttempts,
		DialTimeout:     DefaultS3DialTimeout,
		ResponseTimeout: DefaultS3ResponseTimeout,
	}
}

// Validate checks the configuration. Its errors never contain secrets.
func (c *S3Config) Validate() error {
	if err := validBucketName(c.Bucket); err != nil {
		return err
	}
	if c.Prefix != "" {
		if err := ValidName(c.Prefix); err != nil {
			return fmt.Errorf("s3 prefix: %w", err)
		}
	}
	if c.Endpoint == "" {
		return errors.New("s3 endpoint is empty")
	}
	if _, scheme, err := splitEndpoint(c.Endpoint); err != nil {
		return err
	} else if scheme != "" {
		return fmt.Errorf("s3 endpoint %q: want host[:port] without a scheme (TLS is a separate setting)", c.Endpoint)
	}
	switch c.Addressing {
	case S3AddressingAuto, S3AddressingPath, S3AddressingVirtual:
	default:
		return fmt.Errorf("s3 addressing %q: want %s, %s or %s", c.Addressing, S3AddressingAuto, S3AddressingPath, S3AddressingVirtual)
	}
	if c.CAFile != "" && !c.TLS {
		return errors.New("s3 ca_file is set but TLS is off")
	}
	switch {
	case c.Anonymous && (c.AccessKey != "" || c.SecretKey != "" || c.CredentialsFile != "" || c.Profile != ""):
		return errors.New("s3 credentials: anonymous access and credentials are both set")
	case (c.AccessKey == "") != (c.SecretKey == ""):
		return errors.New("s3 credentials: access key and secret key must be set together")
	case c.SessionToken != "" && c.AccessKey == "":
		return errors.New("s3 credentials: a session token needs an access key and secret key")
	case c.AccessKey == "" && c.CredentialsFile == "" && !c.Anonymous:
		return errors.New("s3 credentials: none found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, name a credentials file or profile, or set anonymous=true)")
	}
	if c.PartSize < minS3PartSize || c.PartSize > maxS3PartSize {
		return fmt.Errorf("s3 part size %d: want 5 MiB to 5 GiB", c.PartSize)
	}
	if c.MaxAttempts < 1 {
		return fmt.Errorf("s3 max attempts %d: want at least 1", c.MaxAttempts)
	}
	if c.DialTimeout <= 0 || c.ResponseTimeout <= 0 {
		return errors.New("s3 timeouts must be positive")
	}
	return nil
}

// validBucketName applies S3's bucket naming rules.
func validBucketName(b string) error {
	if b == "" {
		return errors.New("s3 bucket name is empty")
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("s3 bucket name %q: want 3 to 63 characters", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return fmt.Errorf("s3 bucket name %q: only lower-case letters, digits, '.' and '-' are allowed", b)
		}
	}
	if !isAlnum(b[0]) || !isAlnum(b[len(b)-1]) || strings.Contains(b, "..") {
		return fmt.Errorf("s3 bucket name %q: must start and end with a letter or digit, without \"..\"", b)
	}
	if net.ParseIP(b) != nil {
		return fmt.Errorf("s3 bucket name %q: must not look like an IP address", b)
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// splitEndpoint splits an endpoint given as host[:port] or as an http or
// https URL; tls is "" without a scheme, else "true" or "false".
func splitEndpoint(ep string) (hostport, tls string, err error) {
	if scheme, rest, ok := strings.Cut(ep, "://"); ok {
		switch strings.ToLower(scheme) {
		case "https":
			tls = "true"
		case "http":
			tls = "false"
		default:
			return "", "", fmt.Errorf("s3 endpoint %q: scheme %q, want http or https", ep, scheme)
		}
		ep = strings.TrimSuffix(rest, "/")
	}
	if ep == "" || strings.ContainsAny(ep, "/?#@ \\") {
		return "", "", fmt.Errorf("s3 endpoint %q: want host[:port] or http(s)://host[:port]", ep)
	}
	host := ep
	if h, port, err := net.SplitHostPort(ep); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("s3 endpoint %q: bad port %q", ep, port)
		}
		host = h
	}
	if host == "" {
		return "", "", fmt.Errorf("s3 endpoint %q: no host", ep)
	}
	return ep, tls, nil
}

// Location is the store's s3://bucket/prefix, without settings.
func (c S3Config) Location() string {
	if c.Prefix == "" {
		return "s3://" + c.Bucket
	}
	return "s3://" + c.Bucket + "/" + c.Prefix
}

// endpointURL is the endpoint with its scheme, as errors name it.
func (c S3Config) endpointURL() string {
	if c.TLS {
		return "https://" + c.Endpoint
	}
	return "http://" + c.Endpoint
}

// String describes the configuration without secrets.
func (c S3Config) String() string {
	region := c.Region
	if region == "" {
		region = "auto"
	}
	return fmt.Sprintf("%s (endpoint %s, region %s, addressing %s, credentials %s)",
		c.Location(), c.endpointURL(), region, c.Addressing, c.credentialsDesc())
}

// GoString is String, so %#v does not print secrets either.
func (c S3Config) GoString() string { return "store.S3Config{" + c.String() + "}" }

// LogValue makes slog log String.
func (c S3Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

func (c S3Config) credentialsDesc() string {
	var d string
	switch {
	case c.Anonymous:
		return "anonymous"
	case c.AccessKey != "":
		d = "access key " + maskKey(c.AccessKey)
		if c.SessionToken != "" {
			d += " with session token"
		}
	case c.CredentialsFile != "":
		d = fmt.Sprintf("profile %q in %s", profileOrDefault(c.Profile), c.CredentialsFile)
	default:
		return "none"
	}
	if c.credSource != "" {
		d += " from " + c.credSource
	}
	return d
}

// maskKey shows the last 4 characters of an access key ID, as the AWS CLI does.
func maskKey(k string) string {
	if len(k) <= 8 {
		return "****"
	}
	return "****" + k[len(k)-4:]
}

func profileOrDefault(p string) string {
	if p == "" {
		return "default"
	}
	return p
}

// s3Params are the settings an s3:// URL's query (or OpenOptions.S3) may hold.
var s3Params = []string{"endpoint", "region", "tls", "path_style", "ca_file", "profile", "credentials_file", "anonymous", "part_size"}

// secretParams are refused with a hint instead of being used or echoed.
var secretParams = []string{"access_key", "secret_key", "secret", "session_token", "token", "password", "aws_access_key_id", "aws_secret_access_key"}

// ParseS3URL builds the configuration of s3://bucket/prefix?query. Each
// setting comes from the first of: the URL's query, opts.S3 (flags), the
// environment, the defaults. Credentials come from the first of: a
// credentials file or profile named in the query or opts.S3,
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN), the
// AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
// ~/.aws/credentials, profile AWS_PROFILE or default) if it exists. A URL
// carrying credentials is refused. S3.md has the details.
func ParseS3URL(rawURL string, opts OpenOptions) (S3Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := DefaultS3Config()
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, which may hold a secret: drop it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return cfg, fmt.Errorf("s3 url: %w", err)
	}
	if !strings.EqualFold(u.Scheme, "s3") {
		return cfg, fmt.Errorf("s3 url: scheme %q, want s3", u.Scheme)
	}
	if u.User != nil {
		return cfg, errors.New("s3 url: credentials do not belong in the URL (use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a credentials file)")
	}
	if u.Opaque != "" || u.Fragment != "" {
		return cfg, errors.New("s3 url: want s3://bucket/prefix?settings")
	}
	cfg.Bucket = u.Host
	cfg.Prefix = strings.TrimSuffix(strings.TrimPrefix(u.Path, "/"), "/")

	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return cfg, fmt.Errorf("s3 url %s: bad query: %w", cfg.Location(), err)
	}
	for k := range query {
		if slices.Contains(secretParams, strings.ToLower(k)) {
			return cfg, fmt.Errorf("s3 url %s: credentials do not belong in the URL (%s): use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a credentials file", cfg.Location(), k)
		}
		if !slices.Contains(s3Params, k) {
			return cfg, fmt.Errorf("s3 url %s: unknown setting %q (want one of %s)", cfg.Location(), k, strings.Join(s3Params, ", "))
		}
		if len(query[k]) > 1 {
			return cfg, fmt.Errorf("s3 url %s: setting %q given %d times", cfg.Location(), k, len(query[k]))
		}
	}
	for k := range opts.S3 {
		if !slices.Contains(s3Params, k) {
			return cfg, fmt.Errorf("s3 setting %q: unknown (want one of %s)", k, strings.Join(s3Params, ", "))
		}
	}

	// Layers, least specific first.
	env := map[string]string{}
	for _, kv := range [][2]string{
		{"endpoint", firstEnv(getenv, "TAILOR_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")},
		{"region", firstEnv(getenv, "AWS_REGION", "AWS_DEFAULT_REGION")},
	} {
		if kv[1] != "" {
			env[kv[0]] = kv[1]
		}
	}
	urlLayer := map[string]string{}
	for k, v := range query {
		urlLayer[k] = v[0]
	}
	for _, layer := range []struct {
		name string
		m    map[string]string
	}{{"environment", env}, {"settings", opts.S3}, {"url", urlLayer}} {
		if err := cfg.apply(layer.m); err != nil {
			return cfg, fmt.Errorf("s3 %s for %s: %w", layer.name, cfg.Location(), err)
		}
	}

	// An ambient CA bundle only matters over TLS; an explicit ca_file with
	// tls=false is a mistake that Validate reports.
	if cfg.CAFile == "" && cfg.TLS {
		cfg.CAFile = getenv("AWS_CA_BUNDLE")
	}

	// Credentials.
	switch {
	case cfg.Anonymous:
	case cfg.CredentialsFile != "" || cfg.Profile != "":
		if cfg.CredentialsFile == "" {
			cfg.CredentialsFile = defaultCredentialsFile(getenv)
		}
		cfg.credSource = "settings"
	case getenv("AWS_ACCESS_KEY_ID") != "" || getenv("AWS_SECRET_ACCESS_KEY") != "":
		cfg.AccessKey = getenv("AWS_ACCESS_KEY_ID")
		cfg.SecretKey = getenv("AWS_SECRET_ACCESS_KEY")
		cfg.SessionToken = getenv("AWS_SESSION_TOKEN")
		cfg.credSource = "environment"
	default:
		f := defaultCredentialsFile(getenv)
		if _, err := os.Stat(f); f != "" && (err == nil || getenv("AWS_PROFILE") != "") {
			cfg.CredentialsFile, cfg.Profile = f, getenv("AWS_PROFILE")
			cfg.credSource = "environment"
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func firstEnv(getenv func(string) string, keys ...string) string {
	for _, k := range keys {
		if v := getenv(k); v != "" {
			return v
		}
	}
	return ""
}

func defaultCredentialsFile(getenv func(string) string) string {
	if f := getenv("AWS_SHARED_CREDENTIALS_FILE"); f != "" {
		return f
	}
	if home := getenv("HOME"); home != "" {
		return filepath.Join(home, ".aws", "credentials")
	}
	return ""
}

// apply sets the fields named in m (URL query names). An endpoint with a
// scheme sets TLS; one without resets TLS to on, unless m sets tls too.
func (c *S3Config) apply(m map[string]string) error {
	if ep, ok := m["endpoint"]; ok {
		hostport, tlsFromScheme, err := splitEndpoint(ep)
		if err != nil {
			return err
		}
		c.Endpoint, c.TLS = hostport, tlsFromScheme != "false"
		if t, ok := m["tls"]; ok && tlsFromScheme != "" {
			if b, err := strconv.ParseBool(t); err == nil && strconv.FormatBool(b) != tlsFromScheme {
				return fmt.Errorf("endpoint %q and tls=%s disagree", ep, t)
			}
		}
	}
	for k, v := range m {
		var err error
		switch k {
		case "endpoint":
		case "region":
			c.Region = v
		case "tls":
			c.TLS, err = strconv.ParseBool(v)
		case "path_style":
			var b bool
			if b, err = strconv.ParseBool(v); err == nil {
				c.Addressing = S3AddressingVirtual
				if b {
					c.Addressing = S3AddressingPath
				}
			}
		case "ca_file":
			c.CAFile = v
		case "profile":
			c.Profile = v
		case "credentials_file":
			c.CredentialsFile = v
		case "anonymous":
			c.Anonymous, err = strconv.ParseBool(v)
		case "part_size":
			c.PartSize, err = parseBytes(v)
		}
		if err != nil {
			want := "true or false"
			if k == "part_size" {
				want = "a byte count such as 16MiB"
			}
			return fmt.Errorf("%s=%q: want %s", k, v, want)
		}
	}
	return nil
}

// parseBytes parses a byte count with an optional KiB, MiB or GiB suffix.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.n
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

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
	v, err := creds.Get()
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

// Put implements Store. It fails, leaving any old object, if r yields more
// or fewer than size bytes. A Put whose request failed on the network
// before any byte of r was read is retried; once r has been read from, it
// cannot be (r is not rewound).
func (s *S3) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	key, err := s.key("put", name)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %q: negative size %d", name, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q: %w", name, err)
	}
	if size == 0 {
		// No body is read for an empty object: check r ends now.
		var one [1]byte
		n, err := io.ReadFull(r, one[:])
		if n > 0 {
			return fmt.Errorf("put %q: reader gave more than 0 bytes", name)
		}
		if err != io.EOF {
			return fmt.Errorf("put %q: %w", name, err)
		}
		r = bytes.NewReader(nil)
	}
	contentType := "application/octet-stream"
	if strings.HasSuffix(name, ".json") {
		contentType = "application/json"
	}
	er := &exactReader{r: ctxReader{ctx, r}, left: size, size: size}
	for attempt := 1; ; attempt++ {
		_, err = s.client.PutObject(ctx, s.cfg.Bucket, key, er, size, minio.PutObjectOptions{
			ContentType: contentType,
			PartSize:    uint64(s.cfg.PartSize),
		})
		if er.err != nil {
			// r failed or had the wrong length; the upload was abandoned.
			return fmt.Errorf("put %q: %w", name, er.err)
		}
		if err == nil {
			return nil
		}
		if er.read > 0 || !isNetError(err) || attempt >= s.cfg.MaxAttempts || !sleepCtx(ctx, backoff(attempt)) {
			return s.wrap(ctx, "put", name, err)
		}
	}
}

// backoff is the wait before try attempt+1: 200 ms doubling, capped at
// 1 s, with full jitter, as minio-go waits between its own tries.
func backoff(attempt int) time.Duration {
	d := min(200*time.Millisecond<<(attempt-1), time.Second)
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// exactReader passes on exactly size bytes of r and fails (and remembers
// the failure) if r ends early, has more, or fails. The check for more
// happens on the read that reaches size, so an uploader that reads exactly
// size bytes still sees the error before it completes the upload.
type exactReader struct {
	r          io.Reader
	size, left int64
	read       int64
	err        error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.read += int64(n)
	e.left -= int64(n)
	switch {
	case err != nil && err != io.EOF:
		e.err = err
		return n, err
	case e.left > 0 && err == io.EOF:
		e.err = fmt.Errorf("reader gave %d bytes, want %d", e.read, e.size)
		return n, e.err
	case e.left == 0 && err == nil:
		if err := e.checkEnd(); err != nil {
			e.err = err
			return n, err
		}
	}
	return n, nil
}

// checkEnd reads once more from r, which must be at its end.
func (e *exactReader) checkEnd() error {
	var one [1]byte
	for range 100 {
		n, err := e.r.Read(one[:])
		switch {
		case n > 0:
			return fmt.Errorf("reader gave more than %d bytes", e.size)
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
	return io.ErrNoProgress
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
