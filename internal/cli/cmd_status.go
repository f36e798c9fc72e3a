package cli

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
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
	"github.com/tailorml/tailor/internal/version"
	"github.com/tailorml/tailor/internal/wire"
)

func init() {
	register("status", "show a cluster run: spec, state, leader, members, live numbers", runStatus)
}

// Run states as status shows them.
const (
	stateWaiting = "waiting" // submitted, no coordinator leads yet
	stateRunning = "running" // a coordinator leads
	stateStalled = "stalled" // a coordinator leads, and its watchdog says training makes no progress
	stateDone    = "done"    // the leader recorded the run's end
)

// runStatusView is what `tailor status` shows; --json prints it as is.
type runStatusView struct {
	Run      string                `json:"run"`
	At       time.Time             `json:"at"`
	State    string                `json:"state"` // waiting, running, stalled, done
	Finished *time.Time            `json:"finished,omitempty"`
	Model    string                `json:"model,omitempty"`
	Spec     specView              `json:"spec"`
	Leader   string                `json:"leader,omitempty"` // the leading coordinator's id
	Progress *coordinator.Progress `json:"progress,omitempty"`
	// ProgressAge is how old Progress is, in seconds, when read;
	// ProgressStale says it is much older than the leader's interval
	// (staleProgress): the leader that wrote it is not writing any more.
	ProgressAge   float64      `json:"progress_age_s,omitempty"`
	ProgressStale bool         `json:"progress_stale,omitempty"`
	Members       []memberView `json:"members"`
	// Problems are the parts that could not be read (a server that did not
	// answer); the rest is shown.
	Problems []string `json:"problems,omitempty"`
}

type specView struct {
	Mode         string `json:"mode"`
	Epochs       int    `json:"epochs"`
	Batch        int    `json:"batch"` // per worker
	ParamServers int    `json:"param_servers"`
	Quorum       int    `json:"quorum,omitempty"`
	Staleness    int    `json:"staleness,omitempty"`
	Shuffle      string `json:"shuffle"`
	UnitSize     int    `json:"unit_size,omitempty"` // shuffle "units"
	Seed         uint64 `json:"seed"`
	Data         string `json:"data"` // without anything secret
	Out          string `json:"out"`
}

type memberView struct {
	Role  cluster.Role      `json:"role"`
	ID    string            `json:"id"`
	Rank  int               `json:"rank"`
	Addrs map[string]string `json:"addrs"` // grpc, metrics, gossip
	// Version is the tailor the member runs (version.Info.String), Wire
	// its wire protocol version; both empty for a member from before
	// members published them.
	Version string      `json:"version,omitempty"`
	Wire    string      `json:"wire_protocol,omitempty"`
	Leader  bool        `json:"leader,omitempty"`
	PS      *psView     `json:"paramserver,omitempty"`
	Worker  *workerView `json:"worker,omitempty"`
}

// psView is a parameter server's answer to wire Status.
type psView struct {
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

// workerView is a worker's /metrics.
type workerView struct {
	Steps      float64 `json:"steps"`
	Images     float64 `json:"images"`
	Loss       float64 `json:"loss"`
	InputStall float64 `json:"input_stall_s"`
}

func runStatus(ctx context.Context, env *Env) int {
	var (
		cf             clusterFlags
		jsonOut        bool
		watch, timeout time.Duration
	)
	fs := newFlagSet(env, "status", "--etcd E --run R", `
Shows cluster run R: its spec, whether it is running or done, the leading
coordinator, every live member (role, id, rank, gRPC, metrics and gossip
addresses, the tailor version and wire protocol it runs) and the live
numbers: epoch, step, loss and images per second from the leader's progress
record in etcd, each parameter server's counters (version, bytes in and
out, pushes accepted and rejected) and each worker's /metrics when it serves
them. With --watch it shows the run again every interval until the run is
done or Ctrl-C. Exit status 1 if etcd or the run cannot be read.`)
	fs.StringVar(&cf.etcd, "etcd", os.Getenv("TAILOR_ETCD"), "etcd endpoints, comma-separated (env TAILOR_ETCD)")
	fs.StringVar(&cf.run, "run", os.Getenv("TAILOR_RUN"), "run id (env TAILOR_RUN)")
	fs.BoolVar(&jsonOut, "json", false, "print JSON (with --watch: one object per line)")
	fs.DurationVar(&watch, "watch", 0, "show the run again every interval (e.g. 2s) until it is done")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "bound on reading the run once")
	cf.sec.add(fs)
	if code, done := parse(env, fs); done {
		return code
	}
	run := cf.run
	if !cf.check(env, "status") {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "tailor status: unexpected arguments %q\n", fs.Args())
		return 2
	}
	wt, err := cf.sec.wireTLS()
	if err != nil {
		return fail(env, err)
	}
	cli, err := cf.sec.etcdClient(cf.endpoints())
	if err != nil {
		return fail(env, err)
	}
	defer cli.Close()
	clear := watch > 0 && !jsonOut && isTerminalWriter(env.Stdout)
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		v, err := collectStatus(cctx, cli, run, wt)
		cancel()
		if err != nil {
			if watch == 0 || ctx.Err() != nil {
				return fail(env, err)
			}
			fmt.Fprintf(env.Stderr, "tailor: %v\n", err)
		} else {
			if clear {
				fmt.Fprint(env.Stdout, "\x1b[H\x1b[2J")
			}
			if jsonOut {
				enc := json.NewEncoder(env.Stdout)
				if watch == 0 {
					enc.SetIndent("", "  ")
				}
				if err := enc.Encode(v); err != nil {
					return fail(env, err)
				}
			} else {
				writeStatus(env.Stdout, v)
			}
			if watch == 0 || v.State == stateDone {
				return 0
			}
			if !clear && !jsonOut {
				fmt.Fprintln(env.Stdout)
			}
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(watch):
		}
	}
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// memberRecord is the value of a members/<role>/<id> key (cluster.Join
// writes the Member and its gossip node name).
type memberRecord struct {
	cluster.Member
	Node string `json:"node"`
}

// collectStatus reads the run from etcd, then asks the parameter servers
// and scrapes the workers' metrics, all within ctx.
// Parameter servers are dialled with sec (mutual TLS), if not nil.
func collectStatus(ctx context.Context, cli *clientv3.Client, run string, sec *tls.Config) (*runStatusView, error) {
	keys := cluster.RunKeys(run)
	v := &runStatusView{Run: run, At: time.Now().UTC(), State: stateWaiting, Members: []memberView{}}
	var spec job.Spec
	if _, err := cluster.GetJSON(ctx, cli, keys.Spec(), &spec); err != nil {
		if errors.Is(err, cluster.ErrNotFound) {
			return nil, fmt.Errorf("run %q: not submitted (no spec in etcd)", run)
		}
		return nil, fmt.Errorf("read run %q from etcd %s: %w", run, strings.Join(cli.Endpoints(), ","), err)
	}
	v.Spec = specView{Mode: spec.Mode, Epochs: spec.Epochs, Batch: spec.Batch, ParamServers: spec.ParamServers, Quorum: spec.Quorum,
		Shuffle: "units", Seed: spec.Seed, Data: redactLocation(spec.Data), Out: spec.Out}
	if spec.Mode == job.ModeSSP {
		v.Spec.Staleness = spec.Staleness
	}
	if spec.GlobalShuffle() {
		v.Spec.Shuffle = job.ShuffleGlobal
	} else {
		v.Spec.UnitSize = spec.UnitSize
	}

	var st coordinator.RunStatus
	if _, err := cluster.GetJSON(ctx, cli, keys.Status(), &st); err == nil && st.State == stateDone {
		v.State, v.Model = stateDone, st.Model
		f := st.Finished
		v.Finished = &f
	} else if err != nil && !errors.Is(err, cluster.ErrNotFound) {
		return nil, err
	}
	elect, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys})
	if err != nil {
		return nil, err
	}
	if l, err := elect.Leader(ctx); err == nil {
		v.Leader = l.Member.ID
		if v.State != stateDone {
			v.State = stateRunning
		}
	} else if !errors.Is(err, cluster.ErrNoLeader) {
		return nil, err
	}
	var p coordinator.Progress
	if _, err := cluster.GetJSON(ctx, cli, keys.TrainProgress(), &p); err == nil {
		v.Progress = &p
		v.ProgressAge = max(0, time.Since(p.Updated).Round(100*time.Millisecond).Seconds())
		v.ProgressStale = v.State != stateDone && !p.Done && staleProgress(p, v.ProgressAge)
		if v.State == stateRunning && p.StalledFor > 0 && !v.ProgressStale {
			v.State = stateStalled
		}
	} else if !errors.Is(err, cluster.ErrNotFound) {
		v.Problems = append(v.Problems, fmt.Sprintf("progress: %v", err))
	}

	resp, err := cli.Get(ctx, keys.Members(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("members of run %q: %w", run, err)
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
		m := memberView{Role: role, ID: id, Rank: rec.Rank, Addrs: map[string]string{}}
		for _, k := range []string{"grpc", "metrics", cluster.AddrGossip} {
			if a := rec.Addrs[k]; a != "" {
				m.Addrs[k] = a
			}
		}
		m.Version, m.Wire = rec.Extra[version.ExtraVersion], rec.Extra[version.ExtraWire]
		m.Leader = role == cluster.RoleCoordinator && id == v.Leader
		v.Members = append(v.Members, m)
	}
	slices.SortFunc(v.Members, func(a, b memberView) int {
		return cmp.Or(cmp.Compare(roleOrder(a.Role), roleOrder(b.Role)), cmp.Compare(a.Rank, b.Rank), strings.Compare(a.ID, b.ID))
	})
	if p := mixedWire(v.Members); p != "" {
		v.Problems = append(v.Problems, p)
	}

	// live numbers of the members, in parallel, each bounded by ctx
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
				ps, err := psStatus(ctx, m.Addrs["grpc"], run, sec)
				if err != nil {
					problem("paramserver %s: %v", m.ID, err)
					return
				}
				m.PS = ps
			})
		case m.Role == cluster.RoleWorker && m.Addrs["metrics"] != "":
			wg.Go(func() {
				mv, err := scrapeMetrics(ctx, m.Addrs["metrics"])
				if err != nil {
					problem("worker %s metrics: %v", m.ID, err)
					return
				}
				m.Worker = &workerView{Steps: mv["tailor_worker_steps_total"], Images: mv["tailor_worker_images_total"],
					Loss: mv["tailor_worker_loss"], InputStall: mv["tailor_worker_input_stall_seconds"]}
			})
		}
	}
	wg.Wait()
	slices.Sort(v.Problems)
	return v, nil
}

// mixedWire describes members that speak different wire protocols (they
// refuse each other's calls), each version with its members; "" if all
// speak one.
func mixedWire(ms []memberView) string {
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

// staleProgress reports whether a progress record age seconds old is
// stale: older than three of the leader's intervals, and than 10 s.
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

// psStatus asks one parameter server for its counters.
func psStatus(ctx context.Context, addr, run string, sec *tls.Config) (*psView, error) {
	conn, err := grpc.NewClient(addr, wire.DialOptions(sec)...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	r := new(wire.StatusReply)
	if err := conn.Invoke(ctx, wire.MethodStatus, &wire.StatusRequest{RunID: run, WorkerID: "tailor-status"}, r); err != nil {
		return nil, err
	}
	ps := &psView{Initialised: r.Initialised, Mode: r.Mode, Version: r.Version, Step: r.Step, Workers: r.Members, Pending: r.Pending,
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
	return ps, nil
}

// scrapeMetrics reads the unlabelled samples of a Prometheus text
// exposition at http://addr/metrics.
func scrapeMetrics(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
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

// redactLocation drops what could be secret from a store location: a URL's
// user info and any query parameter whose name suggests a credential. (An
// S3 URL cannot carry credentials, but the spec is any string.)
func redactLocation(loc string) string {
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

// writeStatus prints v for people.
func writeStatus(w io.Writer, v *runStatusView) {
	state := v.State
	switch v.State {
	case stateRunning:
		state += ", leader " + v.Leader
	case stateStalled:
		state = "STALLED, leader " + v.Leader
	case stateDone:
		if v.Finished != nil {
			state += " at " + v.Finished.Local().Format("2006-01-02 15:04:05")
		}
	case stateWaiting:
		state += " for a coordinator"
	}
	fmt.Fprintf(w, "run %s: %s\n", v.Run, state)
	writeStall(w, v)
	s := v.Spec
	deal := "global shuffle"
	if s.Shuffle != job.ShuffleGlobal {
		deal = fmt.Sprintf("units of %d", s.UnitSize)
	}
	spec := fmt.Sprintf("%s, %d epochs, batch %d per worker, %d parameter servers, %s, seed %d", s.Mode, s.Epochs, s.Batch,
		s.ParamServers, deal, s.Seed)
	if s.Quorum > 0 {
		spec += fmt.Sprintf(", quorum %d", s.Quorum)
	}
	if s.Mode == job.ModeSSP {
		spec += fmt.Sprintf(", staleness %d", s.Staleness)
	}
	fmt.Fprintf(w, "  spec      %s\n  data      %s\n  out       %s\n", spec, s.Data, s.Out)
	if v.Model != "" {
		fmt.Fprintf(w, "  model     %s\n", v.Model)
	}
	if p := v.Progress; p != nil {
		phase := ""
		if p.Phase != "" && p.Phase != "training" {
			phase = " (" + p.Phase + ")"
		}
		line := fmt.Sprintf("epoch %d/%d%s, step %d, loss %.4f (epoch mean %.4f), %.1f img/s (epoch %.1f), %d images this epoch, %d live %s",
			p.Epoch, p.Epochs, phase, p.Step, p.Loss, p.EpochLoss, p.ImgPerSec, p.EpochImgPerSec, p.Images, p.Workers, plural(p.Workers, "worker"))
		if p.Done {
			line += ", all epochs trained"
		}
		age := time.Duration(v.ProgressAge * float64(time.Second))
		line += fmt.Sprintf(" (%s ago, by %s)", age.Round(time.Second), p.Leader)
		fmt.Fprintf(w, "  progress  %s\n", line)
	} else {
		fmt.Fprintf(w, "  progress  none yet\n")
	}

	fmt.Fprintf(w, "\nmembers (%d)\n", len(v.Members))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ROLE\tID\tRANK\tGRPC\tMETRICS\tGOSSIP\tVERSION\tWIRE")
	for _, m := range v.Members {
		id := m.ID
		if m.Leader {
			id += " (leader)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", m.Role, id, m.Rank, dash(m.Addrs["grpc"]), dash(m.Addrs["metrics"]), dash(m.Addrs[cluster.AddrGossip]),
			dash(m.Version), dash(m.Wire))
	}
	tw.Flush()

	var pss, ws []memberView
	for _, m := range v.Members {
		if m.PS != nil {
			pss = append(pss, m)
		}
		if m.Worker != nil {
			ws = append(ws, m)
		}
	}
	if len(pss) > 0 {
		fmt.Fprintln(w, "\nparameter servers")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tID\tVERSION\tSTEP\tWORKERS\tPENDING\tBYTES IN\tBYTES OUT\tPUSHES OK\tREJECTED\tMISSING\t")
		for _, m := range pss {
			p := m.PS
			fmt.Fprintf(tw, "\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t\n", m.ID, p.Version, p.Step, p.Workers, p.Pending,
				humanBytes(p.BytesIn), humanBytes(p.BytesOut), p.Accepted, p.Rejected, p.Missing)
		}
		tw.Flush()
		for _, m := range pss {
			if len(m.PS.RejectedBy) > 0 {
				reasons := make([]string, 0, len(m.PS.RejectedBy))
				for r, n := range m.PS.RejectedBy {
					reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
				}
				slices.Sort(reasons)
				fmt.Fprintf(w, "  %s rejected: %s\n", m.ID, strings.Join(reasons, ", "))
			}
		}
	}
	if len(ws) > 0 {
		fmt.Fprintln(w, "\nworkers")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tID\tSTEPS\tIMAGES\tLOSS\tINPUT STALL\t")
		for _, m := range ws {
			x := m.Worker
			fmt.Fprintf(tw, "\t%s\t%.0f\t%.0f\t%.4f\t%.1fs\t\n", m.ID, x.Steps, x.Images, x.Loss, x.InputStall)
		}
		tw.Flush()
	}
	if len(v.Problems) > 0 {
		fmt.Fprintln(w, "\nnot shown")
		for _, p := range v.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}

// writeStall prints, under the run's state, a stall the leader reports and
// a progress record that is stale.
func writeStall(w io.Writer, v *runStatusView) {
	p := v.Progress
	if p == nil {
		return
	}
	age := time.Duration(v.ProgressAge * float64(time.Second)).Round(time.Second)
	if v.ProgressStale {
		every := time.Duration(p.Interval * float64(time.Second))
		if every <= 0 {
			every = coordinator.ProgressInterval
		}
		fmt.Fprintf(w, "  STALE     the leader's progress record is %s old (written every %s): %s is dead, hung or cut off from etcd\n",
			age, every, p.Leader)
	}
	if p.StalledFor <= 0 {
		return
	}
	stalled := time.Duration(p.StalledFor * float64(time.Second))
	when := ""
	if !v.ProgressStale {
		stalled += age // the record's figure was as of its writing
	} else {
		when = fmt.Sprintf(" (as of %s ago)", age)
	}
	line := fmt.Sprintf("stalled for %.0f s%s, waiting for %s", stalled.Seconds(), when, dash(p.WaitingFor))
	if !p.LastStep.IsZero() {
		line += ", last progress at " + p.LastStep.Local().Format("15:04:05")
	}
	if p.StallActions > 0 {
		line += fmt.Sprintf(", %d watchdog %s taken", p.StallActions, plural(p.StallActions, "action"))
	}
	fmt.Fprintf(w, "  STALLED   %s\n", line)
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
