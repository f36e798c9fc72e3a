package fault

import (
	"sync"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	t.Setenv(Env, "worker.w2.delay=300ms, worker.w1.delay=nonsense,bare")
	once = sync.Once{}
	for name, want := range map[string]time.Duration{
		"worker.w2.delay": 300 * time.Millisecond,
		"worker.w1.delay": 0,
		"worker.w0.delay": 0,
		"bare":            0,
	} {
		if got := Duration(name); got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
}
