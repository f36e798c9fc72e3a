package netlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"
)

// Row is one scenario's measurement. Rates and times are undilated (as
// the emulated cluster would run them); CPU figures are this machine's.
type Row struct {
	Config Config
	// ImgPerSec is the cluster's training throughput over the window: the
	// images of the batches the servers applied, per second, × the
	// dilation.
	ImgPerSec float64
	// StepSeconds is the mean time of a sync step (async: of a batch per
	// worker), undilated.
	StepSeconds float64
	// PushBytes is what one worker pushed per step (after compression).
	PushBytes float64
	// Where a worker's step went (the first worker's, per step,
	// undilated): computing (the synthetic sleep), the synchronised
	// BatchNorm exchanges (waiting for the step's slowest worker
	// included), the push past the compute (what overlap did not hide),
	// the pull of the next weights (waiting for the step's decision
	// included). The rest of the step is asking the coordinator for work.
	ComputeS, BNSyncS, PushS, PullS float64
	// BoundImgPerSec is the throughput the servers' and workers' links
	// allow with this push size: a step computes for Step and moves
	// 2·M·max(N/P, 1) bytes over the busiest link at Rate (the push, then
	// the pull); with overlap the push may hide behind backprop, so only
	// the pull's half counts past the compute.
	BoundImgPerSec float64
	// CPUShare is the lab's processes' CPU time over the window, as a
	// share of the machine's cores; Coordinator, Servers, Workers and Etcd
	// split it by role. CoordCPUPerStep is the coordinator's CPU time per
	// step.
	CPUShare, Coordinator, Servers, Workers, Etcd float64
	CoordCPUPerStep                               time.Duration
	// EtcdWritesPerStep is etcd's committed raft proposals per step (its
	// writes: puts, deletes, transactions, lease grants and revocations).
	EtcdWritesPerStep float64
	// Steps and Window are what was measured, in this machine's time.
	Steps  int64
	Window time.Duration
}

// metrics ports, in every host
const (
	portGRPC    = "7000"
	portGossip  = "7946"
	portMetrics = "9100"
	portEtcd    = "2379"
	portPeer    = "2380"
	portEtcdMet = "2381"
)

// Run runs the scenario of cfg: it makes the lab's network, starts etcd,
// submits the run, starts the coordinator, the servers and the workers,
// waits for the warm-up steps, measures a window, and removes every
// process and namespace before it returns (after a failure, a
// cancellation, or a signal that cancels ctx, too).
func Run(ctx context.Context, cfg Config, log *slog.Logger) (row Row, err error) {
	if err := cfg.Validate(); err != nil {
		return Row{}, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return Row{}, err
	}
	// a lab of the same prefix killed before it could clean up
	if err := Clean(ctx, cfg.Prefix); err != nil {
		return Row{}, fmt.Errorf("removing a lab left behind: %w", err)
	}
	n := newNetwork(cfg.Prefix, cfg.Subnet)
	var procs []*proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
		if derr := n.down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("removing the lab: %w", derr))
		}
	}()
	if err := n.up(ctx); err != nil {
		return Row{}, err
	}
	rate := cfg.linkRate()
	add := func(name string) (host, error) { return n.addHost(ctx, name, rate) }
	etcdH, err := add("etcd")
	if err != nil {
		return Row{}, err
	}
	coordH, err := add("coordinator")
	if err != nil {
		return Row{}, err
	}
	var psH, wH []host
	for i := range cfg.Servers {
		h, err := add("ps" + strconv.Itoa(i))
		if err != nil {
			return Row{}, err
		}
		psH = append(psH, h)
	}
	for i := range cfg.Workers {
		h, err := add("w" + strconv.Itoa(i))
		if err != nil {
			return Row{}, err
		}
		wH = append(wH, h)
	}
	log.Info("lab network up", "hosts", len(n.hosts), "link_bit_per_s", rate, "dilation", cfg.Dilation)

	logs := filepath.Join(cfg.Dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return Row{}, err
	}
	etcdDir := filepath.Join(cfg.Dir, "etcd")
	_ = os.RemoveAll(etcdDir)
	client := "http://" + etcdH.ip + ":" + portEtcd
	peer := "http://" + etcdH.ip + ":" + portPeer
	ep, err := start(logs, "etcd", etcdH, nil, cfg.Etcd, "--name", "lab", "--data-dir", etcdDir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "lab="+peer,
		"--listen-metrics-urls", "http://"+etcdH.ip+":"+portEtcdMet, "--log-level", "warn")
	if err != nil {
		return Row{}, err
	}
	procs = append(procs, ep)
	etcdMet := etcdH.ip + ":" + portEtcdMet
	if err := poll(ctx, 30*time.Second, procs, func() (bool, error) {
		_, err := scrape(ctx, etcdH, etcdMet)
		return err == nil, nil
	}); err != nil {
		return Row{}, fmt.Errorf("etcd: %w", err)
	}

	run := "lab"
	common := func(h host) []string {
		return []string{"--etcd", client, "--run", run, "--gossip", h.ip + ":" + portGossip, "--metrics-listen", h.ip + ":" + portMetrics}
	}
	submit := append(common(coordH)[:4], "--data", cfg.Data, "--ps", strconv.Itoa(cfg.Servers), "--mode", cfg.Mode,
		"--compression", cfg.Compression, "--overlap="+strconv.FormatBool(cfg.Overlap), "--sync-bn="+strconv.FormatBool(cfg.SyncBN),
		"--batch", strconv.Itoa(cfg.Batch), "--epochs", "1000", "--shuffle", "units", "--wait-workers", strconv.Itoa(cfg.Workers),
		"--checkpoint-every", "0", "--bn-estimate=false", "--out", filepath.Join(cfg.Dir, "out"),
		"--checkpoints", filepath.Join(cfg.Dir, "checkpoints"))
	// gossip's probe timeout (300 ms) dilated with the links and the
	// compute: a probe that waits behind a link's traffic waits k times
	// longer here than on the network the lab stands for
	env := append(os.Environ(), fmt.Sprintf("TAILOR_FAULTS=gossip.probe=%v", time.Duration(float64(gossipProbe)*cfg.Dilation)))
	sp, err := start(logs, "submit", coordH, env, cfg.Tailor, append([]string{"submit"}, submit...)...)
	if err != nil {
		return Row{}, err
	}
	select {
	case <-sp.done:
		sp.log.Close()
		if sp.err != nil {
			return Row{}, fmt.Errorf("tailor submit: %w (see %s)", sp.err, sp.log.Name())
		}
	case <-ctx.Done():
		sp.stop()
		return Row{}, ctx.Err()
	}

	role := func(name string, h host, args ...string) error {
		p, err := start(logs, name, h, env, cfg.Tailor, args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		return nil
	}
	if err := role("coordinator", coordH, append([]string{"coordinator", "--id", "coord", "--listen", coordH.ip + ":" + portGRPC}, common(coordH)...)...); err != nil {
		return Row{}, err
	}
	for i, h := range psH {
		if err := role(h.name, h, append([]string{"paramserver", "--index", strconv.Itoa(i), "--listen", h.ip + ":" + portGRPC}, common(h)...)...); err != nil {
			return Row{}, err
		}
	}
	// workers start a few at a time, each group once the one before has
	// joined the run (/readyz): dozens of processes starting at once on a
	// few cores starve each other past gossip's probe timeouts, and the
	// run then begins with members that flap
	for i, h := range wH {
		args := append([]string{"worker", "--id", h.name}, common(h)...)
		if cfg.Step > 0 {
			args = append(args, "--synthetic-compute", cfg.stepTime().String())
		}
		if err := role(h.name, h, args...); err != nil {
			return Row{}, err
		}
		if (i+1)%startGroup != 0 && i+1 < len(wH) {
			continue
		}
		for _, g := range wH[max(0, i+1-startGroup) : i+1] {
			if err := poll(ctx, time.Minute, procs, func() (bool, error) {
				return ready(ctx, g, g.ip+":"+portMetrics), nil
			}); err != nil {
				return Row{}, fmt.Errorf("%s joining the run: %w", g.name, err)
			}
		}
	}
	log.Info("lab processes started", "servers", cfg.Servers, "workers", cfg.Workers, "step", cfg.stepTime())

	coordMet := coordH.ip + ":" + portMetrics
	// progress: sync steps decided; async batches applied per worker
	progress := func(m map[string]float64) int64 {
		if cfg.Mode == "sync" {
			return int64(m["tailor_coordinator_step"])
		}
		return int64(m["tailor_coordinator_batches_total"]) / int64(cfg.Workers)
	}
	sample := func() (s snapshot, err error) {
		s.t = time.Now()
		if s.coord, err = scrape(ctx, coordH, coordMet); err != nil {
			return s, err
		}
		if s.etcd, err = scrape(ctx, etcdH, etcdMet); err != nil {
			return s, err
		}
		if s.w0, err = scrape(ctx, wH[0], wH[0].ip+":"+portMetrics); err != nil {
			return s, err
		}
		s.cpu = map[string]time.Duration{}
		for _, p := range procs {
			c, err := p.cpu()
			if err != nil {
				return s, fmt.Errorf("cpu of %s: %w", p.name, err)
			}
			s.cpu[p.name] = c
		}
		return s, nil
	}
	deadline := time.Now().Add(cfg.Timeout)
	var a snapshot
	if err := poll(ctx, time.Until(deadline), procs, func() (bool, error) {
		m, err := scrape(ctx, coordH, coordMet)
		if err != nil {
			return false, nil // not serving yet
		}
		if progress(m) < int64(cfg.Warmup) {
			return false, nil
		}
		a, err = sample()
		return err == nil, err
	}); err != nil {
		return Row{}, fmt.Errorf("warm-up (%d steps): %w (logs in %s)", cfg.Warmup, err, logs)
	}
	log.Info("window starts", "progress", progress(a.coord))
	var b snapshot
	if err := poll(ctx, time.Until(deadline), procs, func() (bool, error) {
		m, err := scrape(ctx, coordH, coordMet)
		if err != nil {
			return false, err
		}
		if progress(m) < progress(a.coord)+int64(cfg.Steps) {
			return false, nil
		}
		b, err = sample()
		return err == nil, err
	}); err != nil {
		return Row{}, fmt.Errorf("window (%d steps): %w (logs in %s)", cfg.Steps, err, logs)
	}
	return measure(cfg, a, b, progress(b.coord)-progress(a.coord)), nil
}

// gossipProbe is the roles' gossip probe timeout (internal/cluster's
// FastFailure setting), which the lab dilates.
const gossipProbe = 300 * time.Millisecond

// startGroup is how many workers start at once.
const startGroup = 4

// ready reports whether the role in h answers /readyz at addr: it has
// joined the run.
func ready(ctx context.Context, h host, addr string) bool {
	cl := &http.Client{Transport: &http.Transport{DialContext: dialIn(h.ns), DisableKeepAlives: true}, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := cl.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// snapshot is the lab's counters at one time.
type snapshot struct {
	t               time.Time
	coord, etcd, w0 map[string]float64
	cpu             map[string]time.Duration // by process name
}

// measure makes the row of the window from a to b, steps long.
func measure(cfg Config, a, b snapshot, steps int64) Row {
	win := b.t.Sub(a.t)
	k := cfg.Dilation
	r := Row{Config: cfg, Steps: steps, Window: win}
	images := (b.coord["tailor_coordinator_batches_total"] - a.coord["tailor_coordinator_batches_total"]) * float64(cfg.Batch)
	r.ImgPerSec = images / win.Seconds() * k
	r.StepSeconds = win.Seconds() / float64(steps) / k
	if pushes := b.w0["tailor_worker_steps_total"] - a.w0["tailor_worker_steps_total"]; pushes > 0 {
		per := func(name string) float64 { return (b.w0[name] - a.w0[name]) / pushes }
		r.PushBytes = per("tailor_worker_push_bytes_total")
		r.BNSyncS = per("tailor_worker_bn_sync_seconds") / k
		r.ComputeS = per("tailor_worker_compute_seconds")/k - r.BNSyncS
		r.PushS = per("tailor_worker_push_seconds") / k
		r.PullS = per("tailor_worker_pull_seconds") / k
	}
	if r.PushBytes > 0 {
		// the busiest link: a server's (N/P workers' pushes in, their
		// pulls out), or a worker's own
		comm := 2 * r.PushBytes * 8 * max(float64(cfg.Workers)/float64(cfg.Servers), 1) / cfg.Rate
		if cfg.Overlap {
			comm /= 2
		}
		step := cfg.Step.Seconds() + comm
		r.BoundImgPerSec = float64(cfg.Workers*cfg.Batch) / step
	}
	cores := float64(numCPU()) * win.Seconds()
	var total time.Duration
	for name, c := range b.cpu {
		d := c - a.cpu[name]
		total += d
		share := d.Seconds() / cores
		switch {
		case name == "etcd":
			r.Etcd += share
		case name == "coordinator":
			r.Coordinator += share
			r.CoordCPUPerStep = d / time.Duration(max(steps, 1))
		case len(name) > 2 && name[:2] == "ps":
			r.Servers += share
		default:
			r.Workers += share
		}
	}
	r.CPUShare = total.Seconds() / cores
	r.EtcdWritesPerStep = (b.etcd["etcd_server_proposals_committed_total"] - a.etcd["etcd_server_proposals_committed_total"]) / float64(max(steps, 1))
	return r
}

// poll calls f every 200 ms until it says done, fails, a process exits,
// ctx ends or d passes.
func poll(ctx context.Context, d time.Duration, procs []*proc, f func() (bool, error)) error {
	end := time.Now().Add(d)
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited: %v (log %s)", p.name, p.err, p.log.Name())
			}
		}
		if time.Now().After(end) {
			return fmt.Errorf("not done after %v", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// numCPU is the machine's cores, the CPU share's denominator.
func numCPU() int { return runtime.NumCPU() }
