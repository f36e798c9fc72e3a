package cluster

import (
	"testing"
	"time"
)

// The retry loops wait 100 ms doubling to 2 s, each wait within ±20%.
func TestBackoffRange(t *testing.T) {
	for range 50 {
		b := newBackoff()
		for i := range 10 {
			d := b.Next()
			want := min(100*time.Millisecond<<i, 2*time.Second)
			lo, hi := want*8/10, want*12/10
			if d < lo || d > hi {
				t.Fatalf("wait %d: got %v, want %v..%v", i, d, lo, hi)
			}
		}
	}
}
