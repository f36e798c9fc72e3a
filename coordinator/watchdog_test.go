package coordinator

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/job"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func testWatchdog(timeout, grace, maxWait time.Duration) (*watchdog, *fakeClock) {
	c := newFakeClock()
	return newWatchdog(watchdogConfig{Timeout: timeout, Grace: grace, MaxWait: maxWait, Now: c.Now}), c
}

// actionsUntil checks w every second of fake time for d and returns the
// second (since the start) of each action.
func actionsUntil(w *watchdog, c *fakeClock, d time.Duration) map[int]stallAction {
	out := map[int]stallAction{}
	for s := 1; s <= int(d/time.Second); s++ {
		c.Advance(time.Second)
		if a, _ := w.Check(); a != stallNone {
			out[s] = a
		}
	}
	return out
}

// The watchdog reports a stall once, at the timeout, then acts with
// waits doubling up to the cap: re-dispatch first, then rollbacks.
func TestWatchdogReportsOnceThenBacksOff(t *testing.T) {
	w, c := testWatchdog(10*time.Second, 0, 40*time.Second)
	w.Arm()
	got := actionsUntil(w, c, 170*time.Second)
	want := map[int]stallAction{10: stallReport, 20: stallRedispatch, 40: stallRollback, 80: stallRollback, 120: stallRollback, 160: stallRollback}
	if len(got) != len(want) {
		t.Fatalf("actions at %v; want %v", got, want)
	}
	for s, a := range want {
		if got[s] != a {
			t.Errorf("at %d s: %v; want %v (all: %v)", s, got[s], a, got)
		}
	}
	if s := w.Stalled(); s != 170*time.Second {
		t.Errorf("stalled for %v; want 170s", s)
	}
	if n := w.Actions(); n != 5 {
		t.Errorf("%d actions; want 5", n)
	}
}

// The first action waits at least the grace (a sync step's deadline), so
// that the step's own deadline acts first.
func TestWatchdogGrace(t *testing.T) {
	w, c := testWatchdog(10*time.Second, 30*time.Second, 0)
	w.Arm()
	got := actionsUntil(w, c, 70*time.Second)
	want := map[int]stallAction{10: stallReport, 40: stallRedispatch, 60: stallRollback}
	if len(got) != len(want) || got[10] != want[10] || got[40] != want[40] || got[60] != want[60] {
		t.Fatalf("actions at %v; want %v", got, want)
	}
}

// Progress ends a stall (its length is returned), and the watchdog is
// armed afresh: the next stall is reported after a whole timeout, and its
// actions start from the first wait again.
func TestWatchdogRearmsAfterProgress(t *testing.T) {
	w, c := testWatchdog(10*time.Second, 0, 0)
	w.Arm()
	if _, _, ended := w.Progress(); ended {
		t.Fatal("progress without a stall ended one")
	}
	if got := actionsUntil(w, c, 25*time.Second); got[10] != stallReport || got[20] != stallRedispatch || len(got) != 2 {
		t.Fatalf("first stall: actions at %v; want report at 10, redispatch at 20", got)
	}
	c.Advance(2 * time.Second)
	stall, n, ended := w.Progress()
	if !ended || stall != 27*time.Second || n != 1 {
		t.Fatalf("progress: stall %v, %d actions, ended %v; want 27s, 1, true", stall, n, ended)
	}
	if s := w.Stalled(); s != 0 {
		t.Errorf("stalled for %v after progress; want 0", s)
	}
	if want := c.Now(); !w.LastProgress().Equal(want) {
		t.Errorf("last progress %v; want %v", w.LastProgress(), want)
	}
	got := actionsUntil(w, c, 25*time.Second)
	if got[10] != stallReport || got[20] != stallRedispatch || len(got) != 2 {
		t.Fatalf("second stall: actions at %v; want report at 10, redispatch at 20", got)
	}
}

// Paused (an epoch's end: validation, a checkpoint; waiting for servers
// or workers), the watchdog says nothing however long the pause, and the
// paused time does not count towards a stall or the wait for an action.
func TestWatchdogQuietWhilePaused(t *testing.T) {
	w, c := testWatchdog(10*time.Second, 0, 0)
	if got := actionsUntil(w, c, time.Minute); len(got) != 0 {
		t.Fatalf("never armed: actions at %v", got)
	}
	w.Arm()
	c.Advance(6 * time.Second)
	w.Pause()
	if got := actionsUntil(w, c, 10*time.Minute); len(got) != 0 {
		t.Fatalf("paused: actions at %v", got)
	}
	w.Arm()
	if got := actionsUntil(w, c, 4*time.Second); got[4] != stallReport || len(got) != 1 {
		t.Fatalf("armed again: actions at %v; want a report 4 s on (10 s armed in all)", got)
	}
	// paused in a stall: its length stands still, and so does the wait
	c.Advance(5 * time.Second)
	w.Pause()
	c.Advance(time.Hour)
	if a, s := w.Check(); a != stallNone || s != 15*time.Second {
		t.Fatalf("paused in a stall: %v, stalled %v; want none, 15s", a, s)
	}
	if s := w.Stalled(); s != 15*time.Second {
		t.Errorf("stalled for %v while paused; want 15s", s)
	}
	w.Arm()
	if got := actionsUntil(w, c, 5*time.Second); got[5] != stallRedispatch || len(got) != 1 {
		t.Fatalf("armed again in a stall: actions at %v; want a redispatch 5 s on", got)
	}
	// progress while paused counts from the pause
	w.Pause()
	c.Advance(time.Minute)
	if stall, _, ended := w.Progress(); !ended || stall != 20*time.Second {
		t.Errorf("progress while paused: stall %v, ended %v; want 20s, true", stall, ended)
	}
	w.Arm()
	if got := actionsUntil(w, c, 10*time.Second); got[10] != stallReport || len(got) != 1 {
		t.Fatalf("after progress while paused: actions at %v; want a report 10 s on", got)
	}
}

// A zero timeout (the spec's negative stall timeout) is no watchdog.
func TestWatchdogOff(t *testing.T) {
	w, c := testWatchdog(0, 0, 0)
	w.Arm()
	if got := actionsUntil(w, c, time.Hour); len(got) != 0 {
		t.Fatalf("off: actions at %v", got)
	}
}

// The leader's phases: the watchdog's clock runs in training only.
func TestWatchdogRunsInTrainingOnly(t *testing.T) {
	w, c := testWatchdog(10*time.Second, 0, 0)
	l := &leader{wd: w}
	for _, p := range []string{phaseServers, phaseRestore, phaseWorkers, phaseValidating, phaseCheckpoint, phaseRollback, phaseTesting} {
		l.setPhase(p)
		if got := actionsUntil(w, c, time.Minute); len(got) != 0 {
			t.Fatalf("phase %q: actions at %v", p, got)
		}
		if l.phaseNow() != p {
			t.Errorf("phase %q; want %q", l.phaseNow(), p)
		}
	}
	l.setPhase(phaseTraining)
	if got := actionsUntil(w, c, 10*time.Second); got[10] != stallReport {
		t.Fatalf("training: actions at %v; want a report at 10 s", got)
	}
}

// The run's spec sets the watchdog: its stall timeout (a spec written
// before the field existed gets the default), a negative one turns it
// off, and a sync run's first action waits for the step deadline.
func TestWatchdogFromSpec(t *testing.T) {
	old := job.DefaultSpec("r", "data")
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "stall_timeout") {
		t.Fatalf("a default spec writes stall_timeout: %s", b)
	}
	var spec job.Spec // as read from etcd, without the field
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	if cfg := watchdogFor(spec); cfg.Timeout != job.DefaultStallTimeout || cfg.Grace != spec.StepDeadline {
		t.Errorf("old sync spec: timeout %v, grace %v; want %v, %v", cfg.Timeout, cfg.Grace, job.DefaultStallTimeout, spec.StepDeadline)
	}
	spec.Mode, spec.StallTimeout = job.ModeAsync, 5*time.Second
	if cfg := watchdogFor(spec); cfg.Timeout != 5*time.Second || cfg.Grace != 0 {
		t.Errorf("async spec: timeout %v, grace %v; want 5s, 0", cfg.Timeout, cfg.Grace)
	}
	spec.StallTimeout = -1
	if cfg := watchdogFor(spec); cfg.Timeout != 0 {
		t.Errorf("negative stall timeout: watchdog timeout %v; want 0 (off)", cfg.Timeout)
	}
	if err := spec.Validate(); err != nil {
		t.Errorf("negative stall timeout refused: %v", err)
	}
	spec.StallTimeout = 500 * time.Millisecond
	if err := spec.Validate(); err == nil || !strings.Contains(err.Error(), "stall timeout") {
		t.Errorf("stall timeout 500ms: %v; want refused", err)
	}
}

// reportAsync makes server report complete for step in the background
// (a report waits for the decision), until the test ends.
func reportAsync(t *testing.T, s *Steps, server int, step int64, complete ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		_, _ = s.Report(ctx, server, step, complete)
	}()
}

// The diagnosis of a stalled sync step names the participants whose
// gradients are missing, the servers that lack them, and the workers and
// servers that are not live.
func TestStallDiagnosisNamesWaited(t *testing.T) {
	s, err := NewSteps(StepsConfig{RunID: "r", Servers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	parts := []string{"w1", "w2", "w3"}
	if err := s.SetParticipants(0, parts); err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{"w1": true, "w2": true}
	names := []string{"ps0", "ps1"}

	// nothing reported yet: no server has any gradient
	d := diagnoseStep(0, parts, s.State(0), live, names)
	if !slices.Equal(d.Workers, parts) || len(d.Complete) != 0 || !slices.Equal(d.Servers(), names) {
		t.Errorf("before reports: waiting %v, complete %v, servers %v; want %v, none, %v", d.Workers, d.Complete, d.Servers(), parts, names)
	}
	if got := d.String(); !strings.Contains(got, "step 0: the gradients of w1, w2, w3 (no server has them)") || !strings.Contains(got, "not live: w3") {
		t.Errorf("before reports: %q", got)
	}
	if len(d.redispatchable()) != 0 {
		t.Errorf("before reports: re-dispatch would bench %v; want none (nothing arrived to end the step with)", d.redispatchable())
	}

	reportAsync(t, s, 0, 0, "w1", "w2")
	reportAsync(t, s, 1, 0, "w1")
	pollUntil(t, 5*time.Second, "both reports", func() bool {
		st := s.State(0)
		return len(st.Complete) == 1 && len(st.Missing[0]) == 1
	})
	d = diagnoseStep(0, parts, s.State(0), live, names)
	d.ServersDown = serversDown([]string{"a0", "a1"}, []cluster.Member{
		{ID: "ps0", Rank: 0, Addrs: map[string]string{AddrGRPC: "a0"}},
		{ID: "ps1", Rank: 1, Addrs: map[string]string{AddrGRPC: "a1-restarted"}},
	}, names)
	if !slices.Equal(d.Workers, []string{"w2", "w3"}) || !slices.Equal(d.Complete, []string{"w1"}) || !slices.Equal(d.Absent, []string{"w3"}) {
		t.Errorf("waiting %v, complete %v, absent %v; want [w2 w3], [w1], [w3]", d.Workers, d.Complete, d.Absent)
	}
	if !slices.Equal(d.Missing["ps0"], []string{"w3"}) || !slices.Equal(d.Missing["ps1"], []string{"w2", "w3"}) {
		t.Errorf("missing %v; want ps0 [w3], ps1 [w2 w3]", d.Missing)
	}
	if !slices.Equal(d.ServersDown, []string{"ps1"}) || !slices.Equal(d.Servers(), names) {
		t.Errorf("servers down %v, waited for %v; want [ps1], %v", d.ServersDown, d.Servers(), names)
	}
	got := d.String()
	for _, want := range []string{"step 0: the gradients of w2, w3 (ps0 lacks w3; ps1 lacks w2, w3)", "not live: w3",
		"parameter servers not live at the attempt's address: ps1"} {
		if !strings.Contains(got, want) {
			t.Errorf("diagnosis %q lacks %q", got, want)
		}
	}
	if !slices.Equal(d.redispatchable(), []string{"w2", "w3"}) {
		t.Errorf("re-dispatch would bench %v; want [w2 w3]", d.redispatchable())
	}
	if got := attrValue(d.attrs(61*time.Second), "waiting_workers"); !slices.Equal(got.([]string), []string{"w2", "w3"}) {
		t.Errorf("log attribute waiting_workers=%v; want [w2 w3]", got)
	}

	a := diagnoseAsync([]string{"w1", "w4"}, live)
	if got := a.String(); !strings.Contains(got, "the batches out with w1, w4") || !strings.Contains(got, "not live: w4") {
		t.Errorf("async diagnosis %q", got)
	}
	if !slices.Equal(a.redispatchable(), []string{"w1", "w4"}) {
		t.Errorf("async re-dispatch would bench %v; want [w1 w4]", a.redispatchable())
	}
}

// watchdogRig is a leader with a sync epoch, steps decided over two
// servers (reports made by the test) and synchronised BatchNorm, without
// etcd or gRPC.
type watchdogRig struct {
	l     *leader
	units []Unit
}

func newWatchdogRig(t *testing.T) *watchdogRig {
	t.Helper()
	us, err := Units(testManifest(), "train", 100)
	if err != nil {
		t.Fatal(err)
	}
	l := &leader{log: slog.New(slog.DiscardHandler), board: newBoard(), decided: make(chan int64, 1024),
		reg: prometheus.NewRegistry(), imagesCounter: prometheus.NewCounter(prometheus.CounterOpts{Name: "batches"})}
	l.wd = newWatchdog(watchdogConfig{Timeout: time.Hour})
	l.registerWatchdogMetrics()
	l.steps, err = NewSteps(StepsConfig{RunID: "r", Servers: 2, Commit: l.commit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.steps.Close)
	l.bn = newBNReducer("r", l.steps.Participants, l.genNow, time.Hour, l.bench, l.log)
	t.Cleanup(l.bn.Close)
	l.board.sched = NewScheduler(us, 3, 0, 16, 0)
	l.spec.ParamServers = 2
	return &watchdogRig{l: l, units: us}
}

// begin opens the next step for ws, as the leader's epoch loop does.
func (r *watchdogRig) begin(t *testing.T, ws []string) (int64, []Batch) {
	t.Helper()
	l := r.l
	l.board.mu.Lock()
	defer l.board.mu.Unlock()
	res, err := l.board.sched.Begin(ws)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(res))
	for i, b := range res {
		ids[i] = b.Worker
	}
	step := l.board.sched.Step()
	if len(res) > 0 {
		if err := l.steps.SetParticipants(step, ids); err != nil {
			t.Fatal(err)
		}
	}
	return step, res
}

// A re-dispatch ends the open sync step with the gradients every server
// holds, benches the worker that did not deliver, and its reservation goes
// back to the pool: every record of the epoch is consumed exactly once.
func TestWatchdogRedispatchExactlyOnce(t *testing.T) {
	r := newWatchdogRig(t)
	l := r.l
	consumed := map[uint64]int{}
	step, res := r.begin(t, []string{"w1", "w2"})
	if len(res) != 2 {
		t.Fatalf("step %d: %d reservations; want 2", step, len(res))
	}
	w1Batch := res[0]
	reportAsync(t, l.steps, 0, step, "w1")
	reportAsync(t, l.steps, 1, step, "w1")
	pollUntil(t, 5*time.Second, "w1 complete on both servers", func() bool { return len(l.steps.State(step).Complete) == 1 })
	d := diagnoseStep(step, l.steps.Participants(step), l.steps.State(step), map[string]bool{"w1": true, "w2": true}, []string{"ps0", "ps1"})
	l.redispatch(d, nil)
	pollUntil(t, 5*time.Second, "the step decided", func() bool { _, ok := l.steps.Decision(step); return ok })
	dec, _ := l.steps.Decision(step)
	if !slices.Equal(dec.Included, []string{"w1"}) || !slices.Equal(dec.Excluded, []string{"w2"}) {
		t.Fatalf("decision %+v; want w1 included, w2 excluded", dec)
	}
	if !l.benched.has("w2") || l.benched.has("w1") {
		t.Errorf("benched w1 %v, w2 %v; want w2 alone", l.benched.has("w1"), l.benched.has("w2"))
	}
	for _, id := range w1Batch.IDs {
		consumed[id]++
	}
	// the rest of the epoch with w1 alone
	for n := 0; ; n++ {
		l.board.mu.Lock()
		done := l.board.sched.Done()
		l.board.mu.Unlock()
		if done {
			break
		}
		if n > 1000 {
			t.Fatal("the epoch never ends")
		}
		_, res := r.begin(t, []string{"w1"})
		if len(res) == 0 {
			t.Fatal("no work for w1 before the epoch's end")
		}
		l.board.mu.Lock()
		got, err := l.board.sched.Decide(res[0].Step, []string{"w1"})
		l.board.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range got {
			for _, id := range b.IDs {
				consumed[id]++
			}
		}
	}
	total := 0
	for _, u := range r.units {
		total += u.Len
	}
	if len(consumed) != total {
		t.Errorf("%d records consumed; want %d", len(consumed), total)
	}
	for id, n := range consumed {
		if n != 1 {
			t.Errorf("record %d consumed %d times", id, n)
		}
	}
	if n := testCounter(t, l, "redispatch"); n != 1 {
		t.Errorf("redispatch actions counted: %v; want 1", n)
	}
}

// A sync step that no gradient has reached on every server cannot end
// with what arrived: the re-dispatch leaves it (and its workers) alone,
// and the rollback that follows goes back to the last checkpoint, once.
func TestWatchdogRedispatchNothingArrived(t *testing.T) {
	r := newWatchdogRig(t)
	l := r.l
	step, _ := r.begin(t, []string{"w1", "w2"})
	d := diagnoseStep(step, l.steps.Participants(step), l.steps.State(step), map[string]bool{"w1": true, "w2": true}, []string{"ps0", "ps1"})
	d.LiveWorkers = 2
	l.redispatch(d, nil)
	if ps := l.steps.Participants(step); !slices.Equal(ps, []string{"w1", "w2"}) || l.benched.len() != 0 {
		t.Errorf("participants %v, %d benched; want both still participants, none benched", ps, l.benched.len())
	}
	a := newAttempt()
	l.att.Store(a)
	l.stallRollback(d, 5*time.Minute, nil)
	if !a.rollingBack() || a.reason() != "no progress for 5m0s" {
		t.Errorf("rolling back %v, why %q; want true, no progress for 5m0s", a.rollingBack(), a.reason())
	}
	l.stallRollback(d, 6*time.Minute, nil) // already under way
	if n := testCounter(t, l, "rollback"); n != 1 {
		t.Errorf("rollbacks counted: %v; want 1", n)
	}
	// no live worker: a rollback would not help
	a = newAttempt()
	l.att.Store(a)
	d.LiveWorkers = 0
	l.stallRollback(d, 7*time.Minute, nil)
	if a.rollingBack() {
		t.Error("rolled back with no live worker")
	}
}

// pollUntil polls cond until it holds, failing the test after d.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// attrValue returns the value of key in slog attributes given as pairs.
func attrValue(attrs []any, key string) any {
	for i := 0; i+1 < len(attrs); i += 2 {
		if k, ok := attrs[i].(string); ok && k == key {
			return attrs[i+1]
		}
	}
	return nil
}

func testCounter(t *testing.T, l *leader, kind string) float64 {
	t.Helper()
	mfs, err := l.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tailor_coordinator_watchdog_actions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "kind" && lp.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no watchdog action counter of kind %q", kind)
	return 0
}

// logRecords is a slog handler that keeps every record.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

// find returns the records with message msg.
func (h *logRecords) find(msg string) []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Record
	for _, r := range h.recs {
		if r.Message == msg {
			out = append(out, r)
		}
	}
	return out
}

func recordAttr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// The leader's watchdog loop on a sync step that w2 does not deliver:
// one error names the step, w2 and the servers that lack its gradient;
// after the grace the step is re-dispatched (it ends with w1's gradient)
// and the end of the stall is logged. On the next step, which no gradient
// reaches, nothing can be re-dispatched and the leader rolls back.
func TestWatchdogLoopActs(t *testing.T) {
	r := newWatchdogRig(t)
	l := r.l
	logs := &logRecords{}
	l.log = slog.New(logs)
	w, c := testWatchdog(10*time.Second, 30*time.Second, 0)
	l.wd = w
	a := newAttempt()
	a.setServers([]string{"a0", "a1"})
	l.att.Store(a)
	l.memberList = func(role cluster.Role) []cluster.Member {
		if role == cluster.RoleParamServer {
			return []cluster.Member{{ID: "ps0", Rank: 0, Addrs: map[string]string{AddrGRPC: "a0"}}, {ID: "ps1", Rank: 1, Addrs: map[string]string{AddrGRPC: "a1"}}}
		}
		return []cluster.Member{{ID: "w1"}, {ID: "w2"}}
	}
	tick := func(n int) {
		for range n {
			c.Advance(time.Second)
			l.checkWatchdog()
		}
	}
	l.setPhase(phaseTraining)
	step, _ := r.begin(t, []string{"w1", "w2"})
	reportAsync(t, l.steps, 0, step, "w1")
	reportAsync(t, l.steps, 1, step, "w1")
	pollUntil(t, 5*time.Second, "w1 complete on both servers", func() bool { return len(l.steps.State(step).Complete) == 1 })

	tick(9)
	if got := logs.find("no progress"); len(got) != 0 {
		t.Fatalf("a stall reported before the timeout: %v", got)
	}
	tick(20)
	errs := logs.find("no progress")
	if len(errs) != 1 || errs[0].Level != slog.LevelError {
		t.Fatalf("%d stall reports; want one error", len(errs))
	}
	for key, want := range map[string]string{"step": "0", "waiting_workers": "[w2]", "waiting_servers": "[ps0 ps1]", "stalled_s": "10"} {
		if got := recordAttr(errs[0], key); got != want {
			t.Errorf("stall report %s=%s; want %s", key, got, want)
		}
	}
	var p Progress
	l.stallProgress(&p)
	if p.StalledFor != 29 || !slices.Equal(p.WaitingWorkers, []string{"w2"}) || !strings.Contains(p.WaitingFor, "step 0: the gradients of w2") || p.Phase != phaseTraining {
		t.Errorf("progress record: %+v; want stalled 29 s, waiting for w2 at step 0, training", p)
	}
	tick(11) // 40 s: 10 s and the grace have passed
	if got := logs.find("no progress: re-dispatching the work of the workers that have not delivered"); len(got) != 1 || recordAttr(got[0], "benched") != "[w2]" {
		t.Fatalf("re-dispatch lines %v; want one benching w2", got)
	}
	pollUntil(t, 5*time.Second, "the end of the stall", func() bool { return len(logs.find("progress resumed")) == 1 })
	if got := recordAttr(logs.find("progress resumed")[0], "stalled_s"); got != "40" {
		t.Errorf("stall ended after %s s; want 40", got)
	}
	if s := w.Stalled(); s != 0 {
		t.Errorf("stalled for %v after progress; want 0", s)
	}

	// the next step: no gradient reaches any server
	step, res := r.begin(t, []string{"w1"})
	if step != 1 || len(res) != 1 {
		t.Fatalf("step %d, %d reservations; want step 1 for w1", step, len(res))
	}
	tick(40)
	if got := logs.find("no progress"); len(got) != 2 || recordAttr(got[1], "waiting_workers") != "[w1]" {
		t.Fatalf("second stall: %d reports; want a second one, waiting for w1", len(got))
	}
	if got := logs.find("no progress: nothing to re-dispatch (no gradient of the step is on every server, or no work is out)"); len(got) != 1 {
		t.Fatalf("%d 'nothing to re-dispatch' lines; want 1", len(got))
	}
	if a.rollingBack() {
		t.Fatal("rolled back before the second action")
	}
	tick(20)
	if got := logs.find("no progress: rolling back to the last checkpoint"); len(got) != 1 || !a.rollingBack() {
		t.Fatalf("%d rollback lines, rolling back %v; want 1, true", len(got), a.rollingBack())
	}
	if n := len(logs.find("no progress")); n != 2 {
		t.Errorf("%d stall reports; want 2 (one per stall)", n)
	}
}
