// Package netlab runs a tailor cluster on an emulated network: every
// process (etcd, the coordinator, each parameter server, each worker) in a
// host of its own, a Linux network namespace joined to a bridge by a veth
// pair whose two directions are shaped to the host's link rate by a token
// bucket (tc tbf). It measures one scenario (workers, servers, link rate,
// update mode, compression, overlap) over a window of steps and removes
// every namespace, link and process it made, whatever happens.
//
// Workers may run with synthetic compute (tailor worker
// --synthetic-compute), so that more workers than cores fit: their step is
// a sleep of a measured step time, and their gradients have the real
// shapes. On a machine with few cores the servers' and workers' own CPU
// work still competes for the same cores; time dilation (DieCast, Gupta et
// al., NSDI 2006) scales the step time up and the link rates down by one
// factor, so that the emulated cluster runs k times slower than the one it
// stands for and the machine's CPU is k times less of a limit. Rates are
// reported in the undilated time (measured img/s × k), with the CPU share
// of the machine the lab's processes used.
//
// It needs root (ip netns, tc), and is Linux only.
package netlab

import (
	"errors"
	"fmt"
	"time"
)

// Config is one scenario.
type Config struct {
	// Tailor is the tailor binary; Etcd the etcd server binary (etcd's own
	// main, deploy/etcd).
	Tailor, Etcd string
	// Dir is the scenario's working folder: etcd's data, the processes'
	// logs.
	Dir string
	// Data is the shard set every process reads (a path: the hosts share
	// this machine's file system, so shard reads do not cross the lab's
	// links).
	Data string
	// Prefix names the lab's namespaces ("<Prefix>-h<i>") and links; it
	// must be unique among the labs on the machine. At most 8 characters.
	Prefix string
	// Subnet is the lab's /16 prefix ("10.77"): hosts are .0.1, .0.2, …
	// inside the namespaces only.
	Subnet string

	Workers, Servers int
	// Rate is every host's link rate in bit/s, in the emulated (undilated)
	// time; each direction of a link gets Rate/Dilation.
	Rate float64
	// Dilation is the time-dilation factor k ≥ 1: step times × k, link
	// rates / k.
	Dilation float64
	// Step is a worker's compute time per step, undilated (the measured
	// step time of tailor bench); 0 runs the real forward and backward
	// pass (and no dilation of compute).
	Step time.Duration
	// Mode (sync, async), Compression (none, fp16, topk), Overlap, Batch
	// and SyncBN are the run's (tailor submit's flags).
	Mode, Compression string
	Overlap, SyncBN   bool
	Batch             int

	// Warmup steps are run before the window, which lasts Steps steps (in
	// sync mode; in async, Steps × Workers batches) or Timeout.
	Warmup, Steps int
	Timeout       time.Duration
}

// DefaultConfig is a small scenario: 4 synthetic workers of a 64 px step,
// 2 servers, 1 Gbit/s links, sync, no compression, overlap on.
func DefaultConfig() Config {
	return Config{Prefix: "tl", Subnet: "10.77", Workers: 4, Servers: 2, Rate: 1e9, Dilation: 1, Step: 210 * time.Millisecond,
		Mode: "sync", Compression: "none", Overlap: true, SyncBN: true, Batch: 32, Warmup: 3, Steps: 10, Timeout: 5 * time.Minute}
}

// Validate checks the scenario.
func (c Config) Validate() error {
	var errs []error
	if c.Tailor == "" || c.Etcd == "" {
		errs = append(errs, errors.New("netlab: the tailor and etcd binaries are required"))
	}
	if c.Dir == "" || c.Data == "" {
		errs = append(errs, errors.New("netlab: a working folder and a shard set are required"))
	}
	if c.Prefix == "" || len(c.Prefix) > 8 {
		errs = append(errs, fmt.Errorf("netlab: prefix %q: want 1 to 8 characters", c.Prefix))
	}
	if c.Workers < 1 || c.Servers < 1 || c.Workers+c.Servers+2 > 250 {
		errs = append(errs, fmt.Errorf("netlab: %d workers and %d servers: want at least one of each, 248 in all", c.Workers, c.Servers))
	}
	if c.Rate <= 0 || c.Dilation < 1 {
		errs = append(errs, fmt.Errorf("netlab: link rate %g bit/s, dilation %g: want a positive rate and a factor of at least 1", c.Rate, c.Dilation))
	}
	if c.Step < 0 || c.Batch < 2 || c.Warmup < 0 || c.Steps < 1 || c.Timeout <= 0 {
		errs = append(errs, errors.New("netlab: step time, batch (≥ 2), warm-up, window (≥ 1 step) or timeout out of range"))
	}
	switch c.Mode {
	case "sync", "async":
	default:
		errs = append(errs, fmt.Errorf("netlab: mode %q: want sync or async", c.Mode))
	}
	switch c.Compression {
	case "none", "fp16", "topk":
	default:
		errs = append(errs, fmt.Errorf("netlab: compression %q: want none, fp16 or topk", c.Compression))
	}
	return errors.Join(errs...)
}

// linkRate is a link direction's rate in bit/s, dilated.
func (c Config) linkRate() float64 { return c.Rate / c.Dilation }

// stepTime is a synthetic worker's step, dilated.
func (c Config) stepTime() time.Duration { return time.Duration(float64(c.Step) * c.Dilation) }
