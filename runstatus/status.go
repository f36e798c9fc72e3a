// Package runstatus collects what is known of a cluster run, as `tailor
// status` shows it: the spec, the run's state and leader from etcd, the
// leader's progress record, every live member's record, and the live
// numbers of the members — each parameter server's counters over the wire
// protocol's Status call, each worker's Prometheus /metrics. Collect
// returns a View; its JSON form is `tailor status --json` (an interface:
// the field names do not change) and WriteText prints it for people.
package runstatus

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/identity"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/version"
	"github.com/tailorml/tailor/internal/wire"
)

// Run states as a View shows them.
const (
	StateWaiting = "waiting" // submitted, no coordinator leads yet
	StateRunning = "running" // a coordinator leads
	StateStalled = "stalled" // a coordinator leads, and its watchdog says training makes no progress
	StateDone    = "done"    // the leader recorded the run's end
)

// ErrNotSubmitted is the error of Collect for a run with no spec in etcd.
var ErrNotSubmitted = errors.New("not submitted (no spec in etcd)")

// View is what is known of a run at one moment; `tailor status --json`
// prints it as is.
type View struct {
	Run      string                `json:"run"`
	At       time.Time             `json:"at"`
	State    string                `json:"state"` // waiting, running, stalled, done
	Finished *time.Time            `json:"finished,omitempty"`
	Model    string                `json:"model,omitempty"`
	Spec     Spec                  `json:"spec"`
	Leader   string                `json:"leader,omitempty"` // the leading coordinator's id
	Progress *coordinator.Progress `json:"progress,omitempty"`
	// ProgressAge is how old Progress is, in seconds, when read;
	// ProgressStale says it is older than three of the leader's intervals
	// and than 10 s: the leader that wrote it is not writing any more.
	ProgressAge   float64  `json:"progress_age_s,omitempty"`
	ProgressStale bool     `json:"progress_stale,omitempty"`
	Members       []Member `json:"members"`
	// Problems are the parts that could not be read (a server that did not
	// answer); the rest is shown.
	Problems []string `json:"problems,omitempty"`
}

// Spec is the part of the run's spec a View shows, without anything
// secret.
type Spec struct {
	Mode         job.Mode `json:"mode"`
	Epochs       int      `json:"epochs"`
	Batch        int      `json:"batch"` // per worker
	ParamServers int      `json:"param_servers"`
	Quorum       int      `json:"quorum,omitempty"`
	Staleness    int      `json:"staleness,omitempty"`
	Shuffle      string   `json:"shuffle"`
	UnitSize     int      `json:"unit_size,omitempty"` // shuffle "units"
	Seed         uint64   `json:"seed"`
	Data         string   `json:"data"` // RedactLocation of the spec's
	Out          string   `json:"out"`
}

// Member is a live member of the run: its record in etcd and, for a
// parameter server or a worker that answered, its live numbers.
type Member struct {
	Role  cluster.Role      `json:"role"`
	ID    string            `json:"id"`
	Rank  int               `json:"rank"`
	Addrs map[string]string `json:"addrs"` // grpc, metrics, gossip
	// Version is the tailor the member runs (version.Info.String), Wire
	// its wire protocol version; both empty for a member from before
	// members published them.
	Version string       `json:"version,omitempty"`
	Wire    string       `json:"wire_protocol,omitempty"`
	Leader  bool         `json:"leader,omitempty"`
	PS      *ParamServer `json:"paramserver,omitempty"`
	Worker  *Worker      `json:"worker,omitempty"`
}

// ParamServer is a parameter server's answer to the wire Status call.
type ParamServer struct {
	Initialised bool              `json:"initialised"`
	Mode        string            `json:"mode"`
	Version     int64             `json:"version"`
	Step        int64             `json:"step"`
	Workers     int               `json:"workers"` // active workers it accepts pushes from
	Pending     int               `json:"pending"`
	BytesIn     uint64            `json:"bytes_in"`
	BytesOut    uint64            `json:"bytes_out"`
	Accepted    uint64            `json:"pushes_accepted"`
	Rejected    uint64            `json:"pushes_rejected"`
	RejectedBy  map[string]uint64 `json:"rejected_by,omitempty"`
	Updates     uint64            `json:"updates"`
	Missing     uint64            `json:"missing"`
}

// Worker is what a worker's /metrics says.
type Worker struct {
	Steps      float64 `json:"steps"`
	Images     float64 `json:"images"`
	Loss       float64 `json:"loss"`
	InputStall float64 `json:"input_stall_s"`
	// Compute, Push and Pull are the seconds the worker has spent
	// computing gradients, pushing them and pulling weights (waiting for
	// the step's decision is in Pull) since it started.
	Compute float64 `json:"compute_s"`
	Push    float64 `json:"push_s"`
	Pull    float64 `json:"pull_s"`
}

// Options are how Collect reaches the members.
type Options struct {
	// TLS is the mutual TLS the parameter servers are dialled with; nil:
	// plaintext.
	TLS *tls.Config
	// HTTP scrapes the workers' /metrics; nil: http.DefaultClient.
	HTTP *http.Client
	// EtcdOnly reads etcd only: no member is asked for its live numbers
	// (a View with no PS or Worker parts), for a frequent poll.
	EtcdOnly bool
}

// memberRecord is the value of a members/<role>/<id> key (cluster.Join
// writes the Member and its gossip node name).
type memberRecord struct {
	cluster.Member
	Node string `json:"node"`
}

// Collect reads run from etcd through cli, then asks the parameter servers
// for their counters and scrapes the workers' /metrics, in parallel, all
// within ctx. An error is returned when etcd or the run cannot be read
// (ErrNotSubmitted when it has no spec); a member that does not answer is
// one of the View's Problems instead.
func Collect(ctx context.Context, cli *clientv3.Client, run string, opts Options) (View, error) {
	keys := cluster.RunKeys(run)
	v := View{Run: run, At: time.Now().UTC(), State: StateWaiting, Members: []Member{}}
	var spec job.Spec
	if _, err := cluster.GetJSON(ctx, cli, keys.Spec(), &spec); err != nil {
		if errors.Is(err, cluster.ErrNotFound) {
			return View{}, fmt.Errorf("run %q: %w", run, ErrNotSubmitted)
		}
		return View{}, fmt.Errorf("read run %q from etcd %s: %w", run, strings.Join(cli.Endpoints(), ","), err)
	}
	v.Spec = specOf(spec)

	var st coordinator.RunStatus
	if _, err := cluster.GetJSON(ctx, cli, keys.Status(), &st); err == nil && st.State == StateDone {
		v.State, v.Model = StateDone, st.Model
		f := st.Finished
		v.Finished = &f
	} else if err != nil && !errors.Is(err, cluster.ErrNotFound) {
		return View{}, err
	}
	elect, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys})
	if err != nil {
		return View{}, err
	}
	if l, err := elect.Leader(ctx); err == nil {
		v.Leader = l.Member.ID
		if v.State != StateDone {
			v.State = StateRunning
		}
	} else if !errors.Is(err, cluster.ErrNoLeader) {
		return View{}, err
	}
	var p coordinator.Progress
	if _, err := cluster.GetJSON(ctx, cli, keys.TrainProgress(), &p); err == nil {
		v.Progress = &p
		v.ProgressAge = max(0, time.Since(p.Updated).Round(100*time.Millisecond).Seconds())
		v.ProgressStale = v.State != StateDone && !p.Done && staleProgress(p, v.ProgressAge)
		if v.State == StateRunning && p.StalledFor > 0 && !v.ProgressStale {
			v.State = StateStalled
		}
	} else if !errors.Is(err, cluster.ErrNotFound) {
		v.Problems = append(v.Problems, fmt.Sprintf("progress: %v", err))
	}

	resp, err := cli.Get(ctx, keys.Members(), clientv3.WithPrefix())
	if err != nil {
		return View{}, fmt.Errorf("members of run %q: %w", run, err)
	}
	for _, kv := range resp.Kvs {
		role, id, ok := keys.ParseMember(string(kv.Key))
		if !ok {
			continue
		}
		var rec memberRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			v.Problems = append(v.Problems, fmt.Sprintf("member %s/%s: undecodable record", role, id))
			continue
		}
		m := Member{Role: role, ID: id, Rank: rec.Rank, Addrs: map[string]string{}}
		for _, k := range []string{"grpc", "metrics", cluster.AddrGossip} {
			if a := rec.Addrs[k]; a != "" {
				m.Addrs[k] = a
			}
		}
		m.Version, m.Wire = rec.Extra[version.ExtraVersion], rec.Extra[version.ExtraWire]
		m.Leader = role == cluster.RoleCoordinator && id == v.Leader
		v.Members = append(v.Members, m)
	}
	slices.SortFunc(v.Members, func(a, b Member) int {
		return cmp.Or(cmp.Compare(roleOrder(a.Role), roleOrder(b.Role)), cmp.Compare(a.Rank, b.Rank), strings.Compare(a.ID, b.ID))
	})
	if p := mixedWire(v.Members); p != "" {
		v.Problems = append(v.Problems, p)
	}

	if opts.EtcdOnly {
		slices.Sort(v.Problems)
		return v, nil
	}
	// live numbers of the members, in parallel, each bounded by ctx
	hc := opts.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	problem := func(format string, args ...any) {
		mu.Lock()
		v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for i := range v.Members {
		m := &v.Members[i]
		switch {
		case m.Role == cluster.RoleParamServer && m.Addrs["grpc"] != "":
			wg.Go(func() {
				ps, err := paramServerStatus(ctx, m.Addrs["grpc"], run, opts.TLS)
				if err != nil {
					problem("paramserver %s: %v", m.ID, err)
					return
				}
				m.PS = ps
			})
		case m.Role == cluster.RoleWorker && m.Addrs["metrics"] != "":
			wg.Go(func() {
				mv, err := scrapeMetrics(ctx, hc, m.Addrs["metrics"])
				if err != nil {
					problem("worker %s metrics: %v", m.ID, err)
					return
				}
				m.Worker = &Worker{Steps: mv["tailor_worker_steps_total"], Images: mv["tailor_worker_images_total"],
					Loss: mv["tailor_worker_loss"], InputStall: mv["tailor_worker_input_stall_seconds"],
					Compute: mv["tailor_worker_compute_seconds"], Push: mv["tailor_worker_push_seconds"], Pull: mv["tailor_worker_pull_seconds"]}
			})
		}
	}
	wg.Wait()
	slices.Sort(v.Problems)
	return v, nil
}

// specOf is the part of s a View shows.
func specOf(s job.Spec) Spec {
	v := Spec{Mode: s.Mode, Epochs: s.Epochs, Batch: s.Batch, ParamServers: s.ParamServers, Quorum: s.Quorum,
		Shuffle: "units", Seed: s.Seed, Data: RedactLocation(s.Data), Out: s.Out}
	if s.Mode == job.ModeSSP {
		v.Staleness = s.Staleness
	}
	if s.GlobalShuffle() {
		v.Shuffle = job.ShuffleGlobal
	} else {
		v.UnitSize = s.UnitSize
	}
	return v
}

// mixedWire describes members that speak different wire protocols (they
// refuse each other's calls), each version with its members; "" if all
// speak one.
func mixedWire(ms []Member) string {
	by := map[string][]string{}
	var versions []string
	for _, m := range ms {
		w := m.Wire
		if w == "" {
			w = "none"
		}
		if by[w] == nil {
			versions = append(versions, w)
		}
		by[w] = append(by[w], string(m.Role)+"/"+m.ID)
	}
	if len(versions) < 2 {
		return ""
	}
	slices.Sort(versions)
	parts := make([]string, len(versions))
	for i, w := range versions {
		parts[i] = fmt.Sprintf("%s: %s", w, strings.Join(by[w], ", "))
	}
	return "members speak different wire protocols and refuse each other's calls (" + strings.Join(parts, "; ") + ")"
}

// staleProgress reports whether a progress record age seconds old is stale: older
// than three of the leader's intervals, and than 10 s.
func staleProgress(p coordinator.Progress, age float64) bool {
	every := p.Interval
	if every <= 0 {
		every = coordinator.ProgressInterval.Seconds()
	}
	return age > max(3*every, 10)
}

func roleOrder(r cluster.Role) int {
	switch r {
	case cluster.RoleCoordinator:
		return 0
	case cluster.RoleParamServer:
		return 1
	case cluster.RoleWorker:
		return 2
	}
	return 3
}

// paramServerStatus asks one parameter server for its counters.
func paramServerStatus(ctx context.Context, addr, run string, sec *tls.Config) (*ParamServer, error) {
	conn, err := grpc.NewClient(addr, wire.DialOptions(identity.ForPeer(sec, run, identity.ParamServer))...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	r := new(wire.StatusReply)
	if err := conn.Invoke(ctx, wire.MethodStatus, &wire.StatusRequest{RunID: run, WorkerID: "tailor-status"}, r); err != nil {
		return nil, err
	}
	return paramServerOf(r), nil
}

// paramServerOf is a View's form of a Status reply: the rejected pushes
// summed, and by reason.
func paramServerOf(r *wire.StatusReply) *ParamServer {
	ps := &ParamServer{Initialised: r.Initialised, Mode: r.Mode, Version: r.Version, Step: r.Step, Workers: r.Members, Pending: r.Pending,
		BytesIn: r.BytesIn, BytesOut: r.BytesOut, Accepted: r.Accepted, Updates: r.Steps, Missing: r.Missing}
	for _, rc := range r.Rejected {
		if rc.Count == 0 {
			continue
		}
		if ps.RejectedBy == nil {
			ps.RejectedBy = map[string]uint64{}
		}
		ps.RejectedBy[rc.Reason] += rc.Count
		ps.Rejected += rc.Count
	}
	return ps
}

// scrapeMetrics reads the unlabelled samples of the Prometheus text
// exposition at http://addr/metrics with hc.
func scrapeMetrics(ctx context.Context, hc *http.Client, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the unlabelled samples of a Prometheus text
// exposition (at most 4 MiB of it).
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(r, 4<<20))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		val, _, _ = strings.Cut(val, " ") // drop a timestamp
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

// RedactLocation drops what could be secret from a store location: a URL's
// user info and any query parameter whose name suggests a credential. (An
// S3 URL cannot carry credentials, but the spec is any string.)
func RedactLocation(loc string) string {
	scheme, _, ok := strings.Cut(loc, "://")
	if !ok || strings.ContainsAny(scheme, `/\.`) {
		return loc // a path
	}
	u, err := url.Parse(loc)
	if err != nil {
		return scheme + "://(unparsable location hidden)"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	q := u.Query()
	changed := false
	for k := range q {
		lk := strings.ToLower(k)
		for _, s := range []string{"secret", "token", "password", "passwd", "signature", "credential", "key"} {
			if strings.Contains(lk, s) && lk != "credentials_file" {
				q[k] = []string{"REDACTED"}
				changed = true
				break
			}
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}
