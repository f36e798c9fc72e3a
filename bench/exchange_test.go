package bench

import (
	"context"
	"strings"
	"testing"

	"github.com/tailorml/tailor/internal/wire"
)

// A small exchange round-trips through real servers on loopback and reports
// what it moved.
func TestExchange(t *testing.T) {
	r, err := Exchange(context.Background(), ExchangeConfig{Size: 16, Classes: 3, Servers: 2, Iters: 2, Warmup: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Floats < 1000 || r.MBps <= 0 || r.RoundMs <= 0 || r.Servers != 2 || r.PushBytes < float64(4*r.Floats)-1e4 {
		t.Errorf("result %+v", r)
	}
	h, err := Exchange(context.Background(), ExchangeConfig{Size: 16, Classes: 3, Servers: 1, Iters: 1, Compression: wire.Compression{Encoding: wire.EncodingFloat16}})
	if err != nil {
		t.Fatal(err)
	}
	if h.PushBytes > 0.6*r.PushBytes {
		t.Errorf("fp16 pushes %.0f bytes, float32 %.0f", h.PushBytes, r.PushBytes)
	}
	var b strings.Builder
	WriteExchange(&b, []ExchangeResult{r})
	if !strings.Contains(b.String(), "| 16 | 2 |") {
		t.Errorf("table:\n%s", b.String())
	}
	if _, err := Exchange(context.Background(), ExchangeConfig{Size: 16, Classes: 3}); err == nil {
		t.Error("zero servers and rounds accepted")
	}
}
