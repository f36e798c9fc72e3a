package dashboard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/runstatus"
)

// StragglerRatio flags a worker whose images per second are below this
// fraction of the median of the run's workers.
const StragglerRatio = 0.7

// LostShown is how long a lost member stays in the members table.
const LostShown = 2 * time.Minute

// RunSummary is one run of the runs table.
type RunSummary struct {
	Run     string  `json:"run"`
	State   string  `json:"state"` // runstatus's: waiting, running, stalled, done
	Leader  string  `json:"leader,omitempty"`
	Mode    string  `json:"mode"`
	Epoch   int     `json:"epoch"`
	Epochs  int     `json:"epochs"`
	Step    int64   `json:"step"`
	ETA     float64 `json:"eta_s,omitempty"` // seconds, while it runs
	BestMAP float64 `json:"best_map,omitempty"`
	// BestEpoch is the epoch of BestMAP (0: no validation yet).
	BestEpoch int       `json:"best_epoch,omitempty"`
	Updated   time.Time `json:"updated,omitzero"`
	Problem   string    `json:"problem,omitempty"`
}

// RunView is everything the run page shows, at one moment.
type RunView struct {
	Status  runstatus.View      `json:"status"`
	Summary RunSummary          `json:"summary"`
	History coordinator.History `json:"history"`
	Events  []coordinator.Event `json:"events"`
	// EventsDropped counts older events the run's log no longer keeps.
	EventsDropped int64                          `json:"events_dropped,omitempty"`
	Members       []MemberRow                    `json:"members"`
	Servers       []ServerRow                    `json:"servers"`
	Pointer       *checkpoint.Pointer            `json:"checkpoint_pointer,omitempty"`
	Checkpoints   []coordinator.CheckpointRecord `json:"checkpoints"`
}

// MemberRow is one line of the members table: a live member, or one lost
// within LostShown.
type MemberRow struct {
	Role   string `json:"role"`
	ID     string `json:"id"`
	State  string `json:"state"` // live, lost
	Leader bool   `json:"leader,omitempty"`
	Addr   string `json:"addr,omitempty"` // gRPC, else metrics
	// LeaseTTL is the seconds left on the member's etcd lease (-1:
	// unknown).
	LeaseTTL int64 `json:"lease_ttl_s"`
	// ContactAge is how long before the leader's last progress record it
	// last heard from the member over gossip, in seconds (-1: unknown).
	ContactAge float64 `json:"contact_age_s"`
	// Lost: when and how the member was found dead (State lost).
	LostAt time.Time `json:"lost_at,omitzero"`
	LostBy string    `json:"lost_by,omitempty"`
	// A worker's numbers: steps, images per second, and the shares of its
	// time computing, pushing gradients, pulling weights (which includes
	// waiting for the step's decision) and waiting for input.
	Steps     float64 `json:"steps,omitempty"`
	ImgPerSec float64 `json:"img_per_s,omitempty"`
	Compute   float64 `json:"compute_share,omitempty"`
	Push      float64 `json:"push_share,omitempty"`
	Pull      float64 `json:"pull_share,omitempty"`
	Stall     float64 `json:"input_stall_share,omitempty"`
	Straggler bool    `json:"straggler,omitempty"`
}

// ServerRow is one parameter server.
type ServerRow struct {
	ID       string            `json:"id"`
	Version  int64             `json:"version"`
	BytesIn  uint64            `json:"bytes_in"`
	BytesOut uint64            `json:"bytes_out"`
	Accepted uint64            `json:"pushes_accepted"`
	Refused  map[string]uint64 `json:"pushes_refused,omitempty"`
	// Staleness is the mean staleness of the gradients applied (async,
	// ssp; -1: not known).
	Staleness float64 `json:"mean_staleness"`
}

// collector reads runs from etcd and their members' live numbers. It
// remembers each worker's last sample for its rate.
type collector struct {
	cli *clientv3.Client
	// archive, if set, is a checkpoint store whose runs are listed when
	// etcd no longer has them
	archive *checkpoint.Location
	opts    runstatus.Options
	hc      *http.Client

	mu      sync.Mutex
	samples map[string]sample // by run, worker id and metrics address
}

type sample struct {
	images float64
	at     time.Time
	rate   float64
}

// ListRuns returns every run in etcd, newest activity first.
func (c *collector) ListRuns(ctx context.Context) ([]RunSummary, error) {
	resp, err := c.cli.Get(ctx, cluster.Root, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	var runs []string
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), cluster.Root)
		name, key, ok := strings.Cut(rest, "/")
		if !ok || key != "spec" {
			continue
		}
		if run, err := unescape(name); err == nil {
			runs = append(runs, run)
		}
	}
	out := make([]RunSummary, 0, len(runs))
	for _, run := range runs {
		v, err := runstatus.Collect(ctx, c.cli, run, runstatus.Options{EtcdOnly: true})
		if err != nil {
			out = append(out, RunSummary{Run: run, State: "unknown", Problem: err.Error()})
			continue
		}
		var h coordinator.History
		if _, err := cluster.GetJSON(ctx, c.cli, cluster.RunKeys(run).History(), &h); err != nil && !errors.Is(err, cluster.ErrNotFound) {
			v.Problems = append(v.Problems, "history: "+err.Error())
		}
		out = append(out, summarise(v, h))
	}
	if c.archive != nil {
		inEtcd := map[string]bool{}
		for _, r := range runs {
			inEtcd[r] = true
		}
		arch, err := archivedRuns(ctx, *c.archive)
		if err != nil {
			out = append(out, RunSummary{Run: "(checkpoint store)", State: "unknown", Problem: err.Error()})
		}
		for run, jobs := range arch {
			if inEtcd[run] {
				continue
			}
			j, m, err := latest(ctx, *c.archive, jobs)
			if err != nil {
				out = append(out, RunSummary{Run: run, State: StateArchived, Problem: err.Error()})
				continue
			}
			v, err := archivedFrom(ctx, *c.archive, j, m, false)
			if err != nil {
				out = append(out, RunSummary{Run: run, State: StateArchived, Problem: err.Error()})
				continue
			}
			out = append(out, v.Summary)
		}
	}
	slices.SortFunc(out, func(a, b RunSummary) int {
		if c := b.Updated.Compare(a.Updated); c != 0 {
			return c
		}
		return strings.Compare(a.Run, b.Run)
	})
	return out, nil
}

// summarise is a run's line of the runs table.
func summarise(v runstatus.View, h coordinator.History) RunSummary {
	s := RunSummary{Run: v.Run, State: v.State, Leader: v.Leader, Mode: string(v.Spec.Mode), Epochs: v.Spec.Epochs}
	if p := v.Progress; p != nil {
		s.Epoch, s.Step, s.Updated = p.Epoch, p.Step, p.Updated
		if v.State == runstatus.StateRunning || v.State == runstatus.StateStalled {
			s.ETA = eta(p)
		}
	}
	for _, e := range h.Epochs {
		if s.BestEpoch == 0 || e.ValMAP > s.BestMAP {
			s.BestMAP, s.BestEpoch = e.ValMAP, e.Epoch
		}
	}
	if len(v.Problems) > 0 {
		s.Problem = strings.Join(v.Problems, "; ")
	}
	return s
}

// eta is the seconds left for the run at the epoch's rate: the rest of
// this epoch's images and the epochs after it (validation not counted);
// 0 when not known.
func eta(p *coordinator.Progress) float64 {
	rate := p.EpochImgPerSec
	if rate <= 0 {
		rate = p.ImgPerSec
	}
	if rate <= 0 || p.EpochImages <= 0 || p.Epoch <= 0 || p.Done {
		return 0
	}
	left := float64(max(p.EpochImages-p.Images, 0)) + float64(max(p.Epochs-p.Epoch, 0))*float64(p.EpochImages)
	return math.Round(left / rate)
}

// View collects what the run page shows for run.
func (c *collector) View(ctx context.Context, run string) (RunView, error) {
	st, err := runstatus.Collect(ctx, c.cli, run, c.opts)
	if errors.Is(err, runstatus.ErrNotSubmitted) && c.archive != nil {
		// a run etcd no longer has: from its checkpoints, if any
		arch, aerr := archivedRuns(ctx, *c.archive)
		if aerr != nil {
			return RunView{}, errors.Join(err, aerr)
		}
		if jobs, ok := arch[run]; ok {
			return archivedView(ctx, *c.archive, jobs)
		}
	}
	if err != nil {
		return RunView{}, err
	}
	keys := cluster.RunKeys(run)
	rv := RunView{Status: st, Members: []MemberRow{}, Servers: []ServerRow{}, Events: []coordinator.Event{}}
	if _, err := cluster.GetJSON(ctx, c.cli, keys.History(), &rv.History); err != nil && !errors.Is(err, cluster.ErrNotFound) {
		rv.Status.Problems = append(rv.Status.Problems, "history: "+err.Error())
	}
	var log coordinator.EventLog
	if _, err := cluster.GetJSON(ctx, c.cli, keys.Events(), &log); err != nil && !errors.Is(err, cluster.ErrNotFound) {
		rv.Status.Problems = append(rv.Status.Problems, "events: "+err.Error())
	}
	rv.Events, rv.EventsDropped = append(rv.Events, log.Events...), log.Dropped
	if p, _, err := checkpoint.GetPointer(ctx, c.cli, keys); err == nil {
		rv.Pointer = &p
	} else if !errors.Is(err, cluster.ErrNotFound) {
		rv.Status.Problems = append(rv.Status.Problems, err.Error())
	}
	rv.Checkpoints = append([]coordinator.CheckpointRecord{}, rv.History.Checkpoints...)
	rv.Summary = summarise(st, rv.History)
	leases := c.leases(ctx, keys)
	rv.Members = c.members(run, st, leases, log.Events, time.Now())
	rv.Servers = c.servers(ctx, st)
	return rv, nil
}

// leases returns the seconds left on each member key's lease, by
// "role/id".
func (c *collector) leases(ctx context.Context, keys cluster.Keys) map[string]int64 {
	out := map[string]int64{}
	resp, err := c.cli.Get(ctx, keys.Members(), clientv3.WithPrefix())
	if err != nil {
		return out
	}
	for _, kv := range resp.Kvs {
		role, id, ok := keys.ParseMember(string(kv.Key))
		if !ok || kv.Lease == 0 {
			continue
		}
		ttl, err := c.cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil || ttl.TTL < 0 {
			continue
		}
		out[string(role)+"/"+id] = ttl.TTL
	}
	return out
}

// members builds the members table: every live member with its lease,
// gossip contact and (workers) numbers, then the members lost within
// LostShown of now.
func (c *collector) members(run string, st runstatus.View, leases map[string]int64, events []coordinator.Event, now time.Time) []MemberRow {
	contacts := map[string]coordinator.Contact{}
	var updated time.Time
	if p := st.Progress; p != nil {
		updated = p.Updated
		for _, ct := range p.Contacts {
			contacts[ct.Role+"/"+ct.ID] = ct
		}
	}
	// the last event of each member: a lost one after its last join means
	// the member registered now is that dead process, until its lease ends
	lastLost := map[string]coordinator.Event{}
	for _, e := range events {
		k := e.Role + "/" + e.Member
		switch e.Kind {
		case coordinator.EventJoined:
			delete(lastLost, k)
		case coordinator.EventLost, coordinator.EventLeft:
			if _, seen := lastLost[k]; !seen {
				lastLost[k] = e
			}
		}
	}
	rows := []MemberRow{}
	present := map[string]bool{}
	for _, m := range st.Members {
		k := string(m.Role) + "/" + m.ID
		present[k] = true
		r := MemberRow{Role: string(m.Role), ID: m.ID, State: "live", Leader: m.Leader, Addr: m.Addrs["grpc"], LeaseTTL: -1, ContactAge: -1}
		if r.Addr == "" {
			r.Addr = m.Addrs["metrics"]
		}
		if ttl, ok := leases[k]; ok {
			r.LeaseTTL = ttl
		}
		if ct, ok := contacts[k]; ok && !ct.LastAck.IsZero() {
			r.ContactAge = math.Max(0, math.Round(updated.Sub(ct.LastAck).Seconds()*10)/10)
		}
		if e, ok := lastLost[k]; ok {
			r.State, r.LostAt, r.LostBy = "lost", e.At, e.By
			if e.Kind == coordinator.EventLeft {
				r.State = "left"
			}
		}
		if w := m.Worker; w != nil {
			r.Steps = w.Steps
			r.ImgPerSec = c.rate(run, m.ID+"@"+m.Addrs["metrics"], w.Images, now)
			busy := w.Compute + w.Push + w.Pull + w.InputStall
			if busy > 0 {
				r.Compute, r.Push, r.Pull, r.Stall = share(w.Compute, busy), share(w.Push, busy), share(w.Pull, busy), share(w.InputStall, busy)
			}
		}
		rows = append(rows, r)
	}
	flagStragglers(rows)
	// members lost recently that are no longer registered, and earlier
	// incarnations of those that came back
	seen := map[string]bool{}
	for i := len(events) - 1; i >= 0; i-- {
		e := events[i]
		if e.Kind != coordinator.EventLost || now.Sub(e.At) > LostShown {
			continue
		}
		k := e.Role + "/" + e.Member
		if l, ok := lastLost[k]; ok && present[k] && l.Seq <= e.Seq {
			continue // the row above shows it
		}
		// a death seen by gossip and confirmed by the lease is one row,
		// with the first detection
		key := k + "@" + lostIncarnation(events, i)
		if seen[key] {
			continue
		}
		seen[key] = true
		first := firstDetection(events, i)
		rows = append(rows, MemberRow{Role: e.Role, ID: e.Member, State: "lost", LostAt: first.At, LostBy: first.By, LeaseTTL: -1, ContactAge: -1})
	}
	return rows
}

// lostIncarnation names the incarnation a lost event at i is of: the
// sequence number of the join before it (or "0").
func lostIncarnation(events []coordinator.Event, i int) string {
	e := events[i]
	for j := i - 1; j >= 0; j-- {
		if f := events[j]; f.Role == e.Role && f.Member == e.Member && f.Kind == coordinator.EventJoined {
			return strconv.FormatInt(f.Seq, 10)
		}
	}
	return "0"
}

// firstDetection is the first lost event of the incarnation of the lost
// event at i.
func firstDetection(events []coordinator.Event, i int) coordinator.Event {
	e := events[i]
	first := e
	for j := i - 1; j >= 0; j-- {
		f := events[j]
		if f.Role != e.Role || f.Member != e.Member {
			continue
		}
		if f.Kind == coordinator.EventJoined {
			break
		}
		if f.Kind == coordinator.EventLost {
			first = f
		}
	}
	return first
}

func share(v, total float64) float64 { return math.Round(v/total*1000) / 1000 }

// rate is a worker's images per second since the previous sample of it
// that is at least a second old (the previous rate in between).
func (c *collector) rate(run, worker string, images float64, now time.Time) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.samples == nil {
		c.samples = map[string]sample{}
	}
	k := run + "\x00" + worker
	prev, ok := c.samples[k]
	switch {
	case !ok || images < prev.images:
		c.samples[k] = sample{images: images, at: now}
		return 0
	case now.Sub(prev.at) < time.Second:
		return prev.rate
	}
	r := math.Round((images-prev.images)/now.Sub(prev.at).Seconds()*10) / 10
	c.samples[k] = sample{images: images, at: now, rate: r}
	return r
}

// flagStragglers marks the live workers whose images per second are
// below StragglerRatio times the median of the live workers' (with at
// least two workers that report a rate).
func flagStragglers(rows []MemberRow) {
	var rates []float64
	for _, r := range rows {
		if r.Role == string(cluster.RoleWorker) && r.State == "live" && r.ImgPerSec > 0 {
			rates = append(rates, r.ImgPerSec)
		}
	}
	if len(rates) < 2 {
		return
	}
	med := median(rates)
	for i := range rows {
		r := &rows[i]
		if r.Role == string(cluster.RoleWorker) && r.State == "live" && r.ImgPerSec > 0 {
			r.Straggler = r.ImgPerSec < StragglerRatio*med
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// servers are the parameter servers' rows, with their mean staleness from
// their /metrics (async and ssp runs).
func (c *collector) servers(ctx context.Context, st runstatus.View) []ServerRow {
	rows := []ServerRow{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, m := range st.Members {
		if m.Role != cluster.RoleParamServer || m.PS == nil {
			continue
		}
		r := ServerRow{ID: m.ID, Version: m.PS.Version, BytesIn: m.PS.BytesIn, BytesOut: m.PS.BytesOut, Accepted: m.PS.Accepted,
			Refused: m.PS.RejectedBy, Staleness: -1}
		i := len(rows)
		rows = append(rows, r)
		if addr := m.Addrs["metrics"]; addr != "" && st.Spec.Mode != "sync" {
			wg.Go(func() {
				sum, n, err := c.staleness(ctx, addr)
				if err == nil && n > 0 {
					mu.Lock()
					rows[i].Staleness = math.Round(sum/n*100) / 100
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return rows
}

// staleness reads the sum and count of a parameter server's staleness
// histogram from its /metrics.
func (c *collector) staleness(ctx context.Context, addr string) (sum, n float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	hc := c.hc
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return histogramSumCount(resp.Body, "tailor_ps_staleness")
}

// histogramSumCount reads name_sum and name_count from a Prometheus text
// exposition, whatever their labels.
func histogramSumCount(r io.Reader, name string) (sum, n float64, err error) {
	sc := bufio.NewScanner(io.LimitReader(r, 4<<20))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		metric, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '}'); i > 0 {
			metric, rest, ok = line[:i+1], strings.TrimSpace(line[i+1:]), true
		}
		if !ok {
			continue
		}
		base, _, _ := strings.Cut(metric, "{")
		val, _, _ := strings.Cut(rest, " ")
		f, perr := strconv.ParseFloat(val, 64)
		if perr != nil {
			continue
		}
		switch base {
		case name + "_sum":
			sum += f
		case name + "_count":
			n += f
		}
	}
	return sum, n, sc.Err()
}
