package store

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
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
