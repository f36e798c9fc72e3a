package netlab

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Tailor, ok.Etcd, ok.Dir, ok.Data = "tailor", "etcd", "dir", "data"
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string // in the error; "" for none
	}{
		{"default", func(*Config) {}, ""},
		{"no binaries", func(c *Config) { c.Tailor = "" }, "binaries"},
		{"long prefix", func(c *Config) { c.Prefix = "123456789" }, "prefix"},
		{"no workers", func(c *Config) { c.Workers = 0 }, "workers"},
		{"too many hosts", func(c *Config) { c.Workers = 247 }, "workers"},
		{"dilation below 1", func(c *Config) { c.Dilation = 0.5 }, "dilation"},
		{"ssp", func(c *Config) { c.Mode = "ssp" }, "mode"},
		{"bad compression", func(c *Config) { c.Compression = "zip" }, "compression"},
		{"empty window", func(c *Config) { c.Steps = 0 }, "window"},
	} {
		cfg := ok
		c.edit(&cfg)
		err := cfg.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: Validate() = %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP a_total A.
# TYPE a_total counter
a_total 3
b{x="1",y="a b"} 2.5
b{x="2"} 1e1
c_seconds_bucket{le="+Inf"} 7
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{"a_total": 3, "b": 12.5, "c_seconds_bucket": 7} {
		if m[name] != want {
			t.Errorf("%s = %g, want %g", name, m[name], want)
		}
	}
	if _, err := parseMetrics(strings.NewReader("a_total x\n")); err == nil {
		t.Error("a bad value parsed")
	}
}

// The process's own CPU time grows as it spins, and by no more than the
// wall time on every core (the machine may be loaded: spin until 100 ms
// of CPU are counted, within a deadline).
func TestCPUTime(t *testing.T) {
	a, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for {
		b, err := cpuTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		wall := time.Since(t0)
		if d := b - a; d >= 100*time.Millisecond {
			if limit := wall*time.Duration(numCPU()) + 20*time.Millisecond; d > limit {
				t.Errorf("%v of CPU in %v on %d cores", d, wall, numCPU())
			}
			return
		}
		if wall > 30*time.Second {
			t.Fatalf("%v of CPU counted after %v of spinning", b-a, wall)
		}
		for t1 := time.Now(); time.Since(t1) < 10*time.Millisecond; {
		}
	}
}

func TestTBF(t *testing.T) {
	for _, c := range []struct {
		rate float64
		want string
	}{
		{1e9, "tbf rate 1000000000bit burst 500000 latency 50ms"},
		{1e8, "tbf rate 100000000bit burst 131072 latency 50ms"},
	} {
		if got := strings.Join(tbf(c.rate), " "); got != c.want {
			t.Errorf("tbf(%g) = %q, want %q", c.rate, got, c.want)
		}
	}
}

// measure turns two snapshots into undilated rates and per-role CPU
// shares.
func TestMeasure(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Workers, cfg.Servers, cfg.Batch, cfg.Dilation, cfg.Rate, cfg.Step, cfg.Overlap = 4, 2, 32, 2, 1e9, 200*time.Millisecond, false
	t0 := time.Unix(1000, 0)
	a := snapshot{t: t0, coord: map[string]float64{"tailor_coordinator_batches_total": 8}, etcd: map[string]float64{"etcd_server_proposals_committed_total": 10},
		w0: map[string]float64{"tailor_worker_steps_total": 2, "tailor_worker_push_bytes_total": 2e6, "tailor_worker_compute_seconds": 1,
			"tailor_worker_bn_sync_seconds": 0.5, "tailor_worker_push_seconds": 0, "tailor_worker_pull_seconds": 1},
		cpu: map[string]time.Duration{"coordinator": time.Second, "ps0": 0, "w0": 0, "etcd": 0}}
	b := snapshot{t: t0.Add(10 * time.Second), coord: map[string]float64{"tailor_coordinator_batches_total": 48}, etcd: map[string]float64{"etcd_server_proposals_committed_total": 30},
		w0: map[string]float64{"tailor_worker_steps_total": 12, "tailor_worker_push_bytes_total": 12e6, "tailor_worker_compute_seconds": 9,
			"tailor_worker_bn_sync_seconds": 1.5, "tailor_worker_push_seconds": 2, "tailor_worker_pull_seconds": 3},
		cpu: map[string]time.Duration{"coordinator": 2 * time.Second, "ps0": 4 * time.Second, "w0": 2 * time.Second, "etcd": time.Second}}
	r := measure(cfg, a, b, 10)
	cores := float64(10 * numCPU())
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"img/s", r.ImgPerSec, 40 * 32 / 10.0 * 2},
		{"step s", r.StepSeconds, 10.0 / 10 / 2},
		{"push bytes", r.PushBytes, 1e6},
		// per step of 10, undilated (÷ 2): compute 8 s - BN 1 s
		{"compute s", r.ComputeS, 0.35},
		{"bn sync s", r.BNSyncS, 0.05},
		{"push s", r.PushS, 0.1},
		{"pull s", r.PullS, 0.1},
		// 0.2 s + 2·1 MB·8·(4/2)/1 Gbit/s = 0.232 s per step of 128 images
		{"bound", r.BoundImgPerSec, 128 / 0.232},
		{"cpu", r.CPUShare, 8 / cores},
		{"coordinator", r.Coordinator, 1 / cores},
		{"servers", r.Servers, 4 / cores},
		{"workers", r.Workers, 2 / cores},
		{"etcd", r.Etcd, 1 / cores},
		{"etcd writes", r.EtcdWritesPerStep, 2},
		{"coordinator ms/step", float64(r.CoordCPUPerStep.Milliseconds()), 100},
	} {
		if d := c.got - c.want; d > 1e-9*max(1, c.want) || d < -1e-9*max(1, c.want) {
			t.Errorf("%s = %g, want %g", c.name, c.got, c.want)
		}
	}
}

// A table's rows read back, and the efficiency of each scenario that has
// a one-worker row.
func TestEfficiency(t *testing.T) {
	table := Header + `
| 1 | 4 | 10 Gbit/s | sync | none | on | 8 | 100 | 0.3 | 0.2 / 0 / 0 / 0.1 | 14.31 | 150 | 4 % (1 / 2 / 1 / 1) | 22.5 | 1.0 |
| 4 | 4 | 10 Gbit/s | sync | none | on | 8 | 360 | 0.3 | 0.2 / 0 / 0 / 0.1 | 14.31 | 500 | 9 % (1 / 3 / 4 / 1) | 32.5 | 1.1 |
| 4 | 4 | 1 Gbit/s | sync | none | on | 8 | 200 | 0.3 | 0.2 / 0 / 0 / 0.1 | 14.31 | 300 | 9 % (1 / 3 / 4 / 1) | 32.5 | 1.1 |
| 1 | 4 | 10 Gbit/s | sync | none | on | 8 | 50 | 0.3 | 0.2 / 0 / 0 / 0.1 | 14.31 | 300 | 9 % (1 / 3 / 4 / 1) | 32.5 | 1.1 | 96 px
some other line
`
	rows, err := ReadRows(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	keys, eff, bound := Efficiency(rows)
	if want := []string{"P=4, 10 Gbit/s, sync, none, overlap on", "96 px, P=4, 10 Gbit/s, sync, none, overlap on"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q (the 1 Gbit/s scenario has no one-worker row)", keys, want)
	}
	k := keys[0]
	if want := [][2]float64{{1, 1}, {4, 0.9}}; !slicesEqual(eff[k], want) {
		t.Errorf("efficiency %v, want %v", eff[k], want)
	}
	if want := [][2]float64{{1, 1}, {4, 500.0 / 600}}; !slicesEqual(bound[k], want) {
		t.Errorf("bound %v, want %v", bound[k], want)
	}
	// no scenario has three rows: nothing to draw
	if err := Plot(t.TempDir()+"/eff.png", rows); err == nil {
		t.Error("Plot drew pairs of points")
	}
}

func slicesEqual(a, b [][2]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if d0, d1 := a[i][0]-b[i][0], a[i][1]-b[i][1]; d0*d0+d1*d1 > 1e-18 {
			return false
		}
	}
	return true
}
