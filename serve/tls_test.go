package serve

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/certs/certstest"
)

// With the run's certificates the server speaks mutual TLS: a client with
// a certificate of the run's CA is answered, every other is refused.
func TestMutualTLS(t *testing.T) {
	pki := certstest.New(t)
	cfg := testConfig(t)
	cfg.TLS = pki.TLS
	r := startServer(t, cfg, testModel(t, 1))
	addr := strings.TrimPrefix(r.url, "http://")
	get := func(scheme string, c *tls.Config) (int, error) {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: c}}
		resp, err := client.Get(scheme + "://" + addr + "/v2/health/ready")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get("https", pki.TLS); code != 200 || err != nil {
		t.Fatalf("client of the run's CA: %d %v", code, err)
	}
	for name, c := range pki.Refused(t) {
		scheme := "https"
		if c == nil {
			scheme = "http"
		}
		if code, err := get(scheme, c); err == nil && code == 200 {
			t.Errorf("%s: answered 200", name)
		}
	}
}
