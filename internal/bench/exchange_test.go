package bench

import (
	"context"
	"strings"
	"testing"
)

// A small exchange round-trips through real servers on loopback and reports
// what it moved.
func TestExchange(t *testing.T) {
	r, err := Exchange(context.Background(), ExchangeConfig{Size: 16, Classes: 3, Servers: 2, Iters: 2, Warmup: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Floats < 1000 || r.MBps <= 0 || r.RoundMs <= 0 || r.Servers != 2 {
		t.Errorf("result %+v", r)
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
