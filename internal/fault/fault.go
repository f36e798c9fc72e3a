// Package fault injects failures into a process for tests, in the manner of
// etcd's failpoints: TAILOR_FAULTS holds comma-separated name=value pairs,
// read once. Production code asks for a fault by name at the point where it
// would happen; with the variable unset every lookup is a map miss.
//
// Faults in use:
//
//	worker.<id>.delay=DURATION   a worker sleeps this long before each push (a straggler)
//	worker.<id>.bnstall=DURATION a worker sleeps this long before each step's first
//	                             synchronised-BatchNorm exchange (a member that does not compute)
//	worker.<id>.hold=PATH        after each step, while the file PATH exists, a worker
//	                             waits before asking for more work (idle through a fault)
//	gossip.probe=DURATION        gossip's probe timeout (probe interval 4/3 of it):
//	                             the network lab's time dilation stretches it with
//	                             the links (default 300 ms)
package fault

import (
	"os"
	"strings"
	"sync"
	"time"
)

// Env is the environment variable holding the faults.
const Env = "TAILOR_FAULTS"

var (
	once   sync.Once
	faults map[string]string
)

func load() {
	faults = map[string]string{}
	for _, kv := range strings.Split(os.Getenv(Env), ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k != "" {
			faults[k] = v
		}
	}
}

// Duration returns the duration fault name, or 0 if it is not set or not a
// duration.
func Duration(name string) time.Duration {
	once.Do(load)
	d, err := time.ParseDuration(faults[name])
	if err != nil {
		return 0
	}
	return d
}

// String returns the fault name's value, or "" if it is not set.
func String(name string) string {
	once.Do(load)
	return faults[name]
}
