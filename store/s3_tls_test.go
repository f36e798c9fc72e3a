package store_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/tailorml/tailor/internal/certs/certstest"
	"github.com/tailorml/tailor/internal/s3test"
	"github.com/tailorml/tailor/store"
)

// startTLSProxy serves HTTPS with the PKI's node certificate in front of
// the plain-HTTP S3 server at endpoint, and returns its host:port.
func startTLSProxy(t *testing.T, pki *certstest.PKI, endpoint string) string {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: endpoint}
	// keep the Host header: it is part of what the client signed
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}}
	ts := httptest.NewUnstartedServer(rp)
	ts.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: pki.TLS.Certificates}
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "https://")
}

// S3 over TLS with the cluster's CA (ca_file, or AWS_CA_BUNDLE through a
// store URL): objects go up and come back; without the CA the endpoint is
// refused; a wrong secret over TLS is access denied; no secret shows in
// errors or logs.
func TestS3OverTLSWithCAFile(t *testing.T) {
	srv := s3test.Start(t)
	pki := certstest.New(t)
	endpoint := startTLSProxy(t, pki, srv.Endpoint)
	bucket := srv.NewBucket(t)
	ctx := context.Background()

	cfg := s3Config(srv, bucket, "tls")
	cfg.Endpoint, cfg.TLS, cfg.CAFile = endpoint, true, pki.Files.CA
	st := newS3(t, cfg)
	if err := st.Put(ctx, "x.shard", strings.NewReader("over tls"), 8); err != nil {
		t.Fatalf("Put over TLS: %v", err)
	}
	if got := string(readAll(t, st, "x.shard")); got != "over tls" {
		t.Errorf("Get over TLS = %q", got)
	}

	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_CA_BUNDLE", pki.Files.CA)
	u := "s3://" + bucket + "/tls?endpoint=" + endpoint + "&region=" + srv.Region + "&path_style=true"
	if _, err := store.Open(ctx, u); err != nil {
		t.Errorf("Open(%s) with AWS_CA_BUNDLE: %v", u, err)
	}

	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	noCA := cfg
	noCA.CAFile = ""
	_, err := store.NewS3(ctx, noCA)
	if !errors.Is(err, store.ErrUnreachable) {
		t.Errorf("NewS3 without the CA = %v, want ErrUnreachable", err)
	}
	logger.Error("s3", "err", err, "cfg", noCA)
	wrong := cfg
	wrong.SecretKey = "wrong-" + srv.SecretKey
	_, err = store.NewS3(ctx, wrong)
	if !errors.Is(err, store.ErrAccessDenied) {
		t.Errorf("NewS3 with a wrong secret over TLS = %v, want ErrAccessDenied", err)
	}
	logger.Error("s3", "err", err, "cfg", wrong)
	for _, s := range []string{srv.SecretKey, wrong.SecretKey} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log shows a secret key:\n%s", logs.String())
		}
	}
}
