package coordinator

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
)

// What a stalled leader waits for: the watchdog's diagnosis, for its log
// line, the progress record and the choice of what to re-dispatch.

// stallDiag is what a stalled leader waits for.
type stallDiag struct {
	Async bool
	Step  int64 // sync: the open step, or the next one
	Open  bool  // sync: a step is open
	// Participants of the open step, and those of them whose gradient
	// every server holds (sync).
	Participants, Complete []string
	// Workers are whom the leader waits for: the open step's participants
	// not complete on every server (sync), the workers holding a batch
	// (async); Absent are those of them not live.
	Workers, Absent []string
	// Missing are, by server, the waited-for gradients it lacks (sync).
	Missing map[string][]string
	// ServersDown are the attempt's servers not live at its address.
	ServersDown []string
	LiveWorkers int // live workers, less the benched
}

// diagnoseStep is the diagnosis of sync step step, open with participants
// parts, as Steps knows it (st); live are the live workers, names the
// servers' names by index.
func diagnoseStep(step int64, parts []string, st StepState, live map[string]bool, names []string) stallDiag {
	d := stallDiag{Step: step, Open: true, Participants: parts, Workers: st.Waiting, Missing: map[string][]string{}}
	for _, w := range st.Complete {
		if slices.Contains(parts, w) {
			d.Complete = append(d.Complete, w)
		}
	}
	for i, ws := range st.Missing {
		if len(ws) > 0 && i < len(names) {
			d.Missing[names[i]] = ws
		}
	}
	d.Absent = absent(d.Workers, live)
	return d
}

// diagnoseAsync is the diagnosis of an async or SSP epoch whose batches
// out are held by holders.
func diagnoseAsync(holders []string, live map[string]bool) stallDiag {
	return stallDiag{Async: true, Step: -1, Workers: holders, Absent: absent(holders, live)}
}

func absent(ws []string, live map[string]bool) []string {
	var out []string
	for _, w := range ws {
		if !live[w] {
			out = append(out, w)
		}
	}
	return out
}

// serverNames names the n servers by index: the live member of that rank,
// else "ps<index>".
func serverNames(n int, members []cluster.Member) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("ps%d", i)
	}
	for _, m := range members {
		if m.Rank >= 0 && m.Rank < n {
			names[m.Rank] = m.ID
		}
	}
	return names
}

// serversDown returns the names of the servers whose address in addrs (the
// attempt's, by index) no live member has: dead, or restarted elsewhere.
func serversDown(addrs []string, members []cluster.Member, names []string) []string {
	up := map[string]bool{}
	for _, m := range members {
		up[m.Addrs[AddrGRPC]] = true
	}
	var out []string
	for i, a := range addrs {
		if !up[a] && i < len(names) {
			out = append(out, names[i])
		}
	}
	return out
}

// Servers returns the servers waited for, sorted: those lacking a
// gradient and those not live.
func (d stallDiag) Servers() []string {
	var out []string
	for s := range d.Missing {
		out = append(out, s)
	}
	out = append(out, d.ServersDown...)
	slices.Sort(out)
	return slices.Compact(out)
}

// String says in a few words what the leader waits for.
func (d stallDiag) String() string {
	var parts []string
	switch {
	case d.Async && len(d.Workers) > 0:
		parts = append(parts, "the batches out with "+strings.Join(d.Workers, ", "))
	case d.Async:
		parts = append(parts, "a worker to ask for work")
	case !d.Open && d.LiveWorkers == 0:
		parts = append(parts, fmt.Sprintf("step %d: a live worker", d.Step))
	case !d.Open:
		parts = append(parts, fmt.Sprintf("step %d: the records left are held by workers that are not live", d.Step))
	case len(d.Workers) == 0:
		parts = append(parts, fmt.Sprintf("step %d: its decision to be recorded in etcd", d.Step))
	default:
		parts = append(parts, fmt.Sprintf("step %d: the gradients of %s (%s)", d.Step, strings.Join(d.Workers, ", "), d.missingString()))
	}
	if len(d.Absent) > 0 {
		parts = append(parts, "not live: "+strings.Join(d.Absent, ", "))
	}
	if len(d.ServersDown) > 0 {
		parts = append(parts, "parameter servers not live at the attempt's address: "+strings.Join(d.ServersDown, ", "))
	}
	return strings.Join(parts, "; ")
}

// missingString says which server lacks which of the waited-for gradients.
func (d stallDiag) missingString() string {
	servers := make([]string, 0, len(d.Missing))
	for s := range d.Missing {
		servers = append(servers, s)
	}
	slices.Sort(servers)
	same := len(servers) > 1
	for _, s := range servers {
		same = same && slices.Equal(d.Missing[s], d.Workers)
	}
	if same {
		return "no server has them"
	}
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s + " lacks " + strings.Join(d.Missing[s], ", ")
	}
	return strings.Join(out, "; ")
}

// attrs are the diagnosis as log attributes.
func (d stallDiag) attrs(stalled time.Duration) []any {
	a := []any{"stalled_s", round1(stalled.Seconds())}
	if !d.Async {
		a = append(a, "step", d.Step, "participants", d.Participants)
	}
	a = append(a, "waiting_workers", d.Workers, "waiting_servers", d.Servers())
	if len(d.Absent) > 0 {
		a = append(a, "absent_workers", d.Absent)
	}
	if len(d.ServersDown) > 0 {
		a = append(a, "servers_down", d.ServersDown)
	}
	return append(a, "live_workers", d.LiveWorkers, "waiting_for", d.String())
}

// redispatchable returns the workers a re-dispatch benches: those that
// have not delivered, if the others can go on without them — in a sync
// step, only if some participant's gradient is on every server (with
// none, the step cannot end without them: that is the rollback's work).
func (d stallDiag) redispatchable() []string {
	if !d.Async && (!d.Open || len(d.Complete) == 0) {
		return nil
	}
	return d.Workers
}

// diagnose says what the leader waits for now.
func (l *leader) diagnose() stallDiag {
	workers := l.members(cluster.RoleWorker)
	live := map[string]bool{}
	for _, m := range workers {
		live[m.ID] = true
	}
	servers := l.members(cluster.RoleParamServer)
	unbenched := len(l.benched.filter(workers))
	var addrs []string
	if a := l.att.Load(); a != nil {
		addrs = a.servers()
	}
	v := l.board.view()
	names := serverNames(l.spec.ParamServers, servers)
	var d stallDiag
	switch {
	case v.sync && v.open:
		d = diagnoseStep(v.step, l.steps.Participants(v.step), l.steps.State(v.step), live, names)
	case v.sync:
		d = stallDiag{Step: v.step}
	default:
		d = diagnoseAsync(v.holders, live)
	}
	d.ServersDown = serversDown(addrs, servers, names)
	d.LiveWorkers = unbenched
	return d
}
