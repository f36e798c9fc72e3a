package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/internal/cluster"
)

// The run's journal: what the leaders saw happen (EventLog, at
// Keys.Events) and the run's numbers over time (History, at
// Keys.History). Each leader reads both when its term starts, appends,
// and writes them back under the leader guard, so the journal goes on
// across failovers. Both are bounded; both are informational (nothing
// reads them to decide anything) and outlive the run. `tailor dashboard`
// shows them.

// Event kinds.
const (
	EventJoined            = "joined"             // a member became live
	EventLost              = "lost"               // a member died: By says how it was noticed (gossip, lease)
	EventLeft              = "left"               // a member left cleanly
	EventElected           = "elected"            // a coordinator leads the run (Detail: first, again, or after whom)
	EventFailover          = "failover"           // a new coordinator leads after another one's death or loss of its lease
	EventRollback          = "rollback"           // the run goes back to the last checkpoint (Detail: why)
	EventCheckpointSkipped = "checkpoint-skipped" // a checkpoint failed; training went on
	EventStoreOutage       = "store-outage"       // the object store was out of reach for the whole retry budget
	EventEtcdOutage        = "etcd-outage"        // the leader could not write to etcd (Detail: for how long)
	EventLeaseLost         = "lease-lost"         // the leader's own member lease was lost (etcd out of reach)
	EventTermLost          = "term-lost"          // a leader's term ended early: its election lease ran out (etcd out of reach), or its guard failed
	EventStalled           = "stalled"            // the watchdog declared a stall (Detail: what it waits for)
	EventDone              = "done"               // every epoch trained
)

// Detection of a lost member (Event.By).
const (
	ByGossip = "gossip" // memberlist declared it dead: about 1.5 s after a crash
	ByLease  = "lease"  // its etcd lease expired (or was revoked) first
	// ByReplaced: a new process of the same id (a restart) registered
	// before either noticed
	ByReplaced = "restart"
)

// MaxEvents is how many events the log keeps (the oldest go first).
const MaxEvents = 300

// MaxCheckpointRecords is how many checkpoints History keeps.
const MaxCheckpointRecords = 200

// Event is one thing the leader saw happen.
type Event struct {
	Seq    int64     `json:"seq"` // from 1, over the whole run
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"`
	Role   string    `json:"role,omitempty"`
	Member string    `json:"member,omitempty"`
	By     string    `json:"by,omitempty"`
	Detail string    `json:"detail,omitempty"`
	Leader string    `json:"leader"` // the coordinator that recorded it
}

// EventLog is the value of Keys.Events: the newest MaxEvents events,
// oldest first.
type EventLog struct {
	Events  []Event `json:"events"`
	Dropped int64   `json:"dropped,omitempty"` // older events no longer kept
}

// History is the value of Keys.History.
type History struct {
	Labels []string `json:"labels,omitempty"`
	// Epochs are the validated epochs in order; an epoch trained again
	// after a rollback replaces the earlier record.
	Epochs []EpochRecord `json:"epochs"`
	// Eval is the latest evaluation's score of every label.
	Eval *EvalRecord `json:"eval,omitempty"`
	// Best is the epoch whose model is kept (0: none yet).
	Best int `json:"best,omitempty"`
	// Checkpoints are the newest MaxCheckpointRecords checkpoints
	// published, oldest first.
	Checkpoints []CheckpointRecord `json:"checkpoints"`
}

// EpochRecord is one validated epoch.
type EpochRecord struct {
	Epoch     int       `json:"epoch"`
	TrainLoss float64   `json:"train_loss"`
	ValLoss   float64   `json:"val_loss"`
	ValMAP    float64   `json:"val_map"`
	MacroF1   float64   `json:"val_macro_f1"`
	LR        float64   `json:"lr"`
	ImgPerSec float64   `json:"img_per_s"`
	Seconds   float64   `json:"seconds"`
	At        time.Time `json:"at,omitzero"` // when it was validated (zero: restored from a checkpoint)
}

// EvalRecord is one evaluation's per-label scores.
type EvalRecord struct {
	Epoch  int          `json:"epoch"`
	Labels []LabelScore `json:"labels"`
}

// LabelScore is a label's average precision (absent for a label without
// positives in the split), F1 at threshold 0.5 and positives.
type LabelScore struct {
	Label   string   `json:"label"`
	AP      *float64 `json:"ap,omitempty"`
	F1      float64  `json:"f1"`
	Support int      `json:"support"`
}

// CheckpointRecord is one published checkpoint.
type CheckpointRecord struct {
	Name    string    `json:"name"`
	Reason  string    `json:"reason"` // start, steps, epoch
	Step    int64     `json:"step"`
	Epochs  int       `json:"epochs"`
	Best    bool      `json:"best,omitempty"`
	Created time.Time `json:"created"`
	Seconds float64   `json:"seconds"` // from the cut to the pointer's move
	Bytes   int64     `json:"bytes"`   // of the parts
}

// journal is the leader's copy of the run's journal and its writer: the
// parts record into it, and flush writes what changed to etcd. A nil
// journal records nothing.
type journal struct {
	cli   *clientv3.Client
	keys  cluster.Keys
	guard func() clientv3.Cmp
	self  string
	log   *slog.Logger

	mu         sync.Mutex
	events     EventLog
	hist       History
	seq        int64
	evVer      uint64 // changes recorded into events, and hist
	histVer    uint64
	evWritten  uint64 // the versions last written to etcd
	histWrote  uint64
	failing    time.Time // when writes to etcd began to fail (zero: they work)
	failingErr error

	kick chan struct{}
}

// loadJournal reads the run's journal as earlier leaders left it (an
// unreadable one starts afresh, with a warning).
func loadJournal(ctx context.Context, cli *clientv3.Client, keys cluster.Keys, guard func() clientv3.Cmp, self string, log *slog.Logger) *journal {
	j := &journal{cli: cli, keys: keys, guard: guard, self: self, log: log, kick: make(chan struct{}, 1)}
	if _, err := cluster.GetJSON(ctx, cli, keys.Events(), &j.events); err != nil && !errors.Is(err, cluster.ErrNotFound) {
		log.Warn("event log not read; starting a new one", "err", err)
		j.events = EventLog{}
	}
	if _, err := cluster.GetJSON(ctx, cli, keys.History(), &j.hist); err != nil && !errors.Is(err, cluster.ErrNotFound) {
		log.Warn("run history not read; starting a new one", "err", err)
		j.hist = History{}
	}
	if n := len(j.events.Events); n > 0 {
		j.seq = j.events.Events[n-1].Seq
	}
	return j
}

// add records an event now.
func (j *journal) add(e Event) {
	if j == nil {
		return
	}
	j.mu.Lock()
	j.addLocked(e)
	j.mu.Unlock()
	j.poke()
}

func (j *journal) addLocked(e Event) {
	j.seq++
	e.Seq, e.Leader = j.seq, j.self
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	j.events.Events = append(j.events.Events, e)
	if over := len(j.events.Events) - MaxEvents; over > 0 {
		j.events.Events = append([]Event(nil), j.events.Events[over:]...)
		j.events.Dropped += int64(over)
	}
	j.evVer++
}

// member records a membership event of another member (joins, deaths and
// leaves; not updates of a live member's record).
func (j *journal) member(ev cluster.Event, self cluster.Member) {
	e := Event{At: ev.At.UTC(), Role: string(ev.Member.Role), Member: ev.Member.ID}
	switch ev.Kind {
	case cluster.EventJoined:
		e.Kind = EventJoined
	case cluster.EventFailed:
		e.Kind, e.By = EventLost, ByGossip
		e.Detail = "gossip declared it dead"
	case cluster.EventGone:
		e.Kind, e.By = EventLost, ByLease
		e.Detail = "its etcd lease expired or was revoked"
		if ev.Replaced {
			e.By, e.Detail = ByReplaced, "a new process of the same id registered in its place"
		}
	case cluster.EventLeft:
		e.Kind, e.Detail = EventLeft, "left the run cleanly"
	case cluster.EventRegistered:
		e.Kind, e.Role, e.Member = EventJoined, string(self.Role), self.ID
		e.Detail = "the leader registered again under a new lease"
	case cluster.EventLeaseLost:
		e.Kind, e.Role, e.Member = EventLeaseLost, string(self.Role), self.ID
		e.Detail = "the leader's member lease was lost: etcd out of reach"
	default:
		return
	}
	j.add(e)
}

// epoch records a validated epoch and its per-label scores.
func (j *journal) epoch(ep eval.Epoch, labels []string, best int) {
	if j == nil {
		return
	}
	r := EpochRecord{Epoch: ep.Epoch, TrainLoss: finite(ep.TrainLoss), ValLoss: finite(ep.Val.Loss), ValMAP: finite(ep.Val.MAP),
		MacroF1: finite(ep.Val.MacroF1), LR: finite(ep.LR), ImgPerSec: finite(ep.ImgPerSec), Seconds: finite(ep.Seconds), At: time.Now().UTC()}
	ev := &EvalRecord{Epoch: ep.Epoch}
	for i, l := range labels {
		s := LabelScore{Label: l}
		if i < len(ep.Val.AP) && !math.IsNaN(ep.Val.AP[i]) {
			ap := ep.Val.AP[i]
			s.AP = &ap
		}
		if i < len(ep.Val.F1) {
			s.F1 = finite(ep.Val.F1[i])
		}
		if i < len(ep.Val.Support) {
			s.Support = ep.Val.Support[i]
		}
		ev.Labels = append(ev.Labels, s)
	}
	j.mu.Lock()
	j.hist.Labels, j.hist.Eval, j.hist.Best = labels, ev, best
	j.hist.Epochs = putEpoch(j.hist.Epochs, r)
	j.histVer++
	j.mu.Unlock()
	j.poke()
}

// restored makes the epochs those of the history a checkpoint brought
// back: records of later epochs (undone by a rollback) go, missing ones
// come from the checkpoint.
func (j *journal) restored(h []eval.Epoch, best int) {
	if j == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	last := 0
	if n := len(h); n > 0 {
		last = h[n-1].Epoch
	}
	kept := j.hist.Epochs[:0:0]
	for _, r := range j.hist.Epochs {
		if r.Epoch <= last {
			kept = append(kept, r)
		}
	}
	for _, ep := range h {
		if !hasEpoch(kept, ep.Epoch) {
			kept = putEpoch(kept, EpochRecord{Epoch: ep.Epoch, TrainLoss: finite(ep.TrainLoss), ValLoss: finite(ep.Val.Loss), ValMAP: finite(ep.Val.MAP),
				MacroF1: finite(ep.Val.MacroF1), LR: finite(ep.LR), ImgPerSec: finite(ep.ImgPerSec), Seconds: finite(ep.Seconds)})
		}
	}
	j.hist.Epochs, j.hist.Best = kept, best
	j.histVer++
}

// checkpoint records a published checkpoint.
func (j *journal) checkpoint(r CheckpointRecord) {
	if j == nil {
		return
	}
	j.mu.Lock()
	j.hist.Checkpoints = append(j.hist.Checkpoints, r)
	if over := len(j.hist.Checkpoints) - MaxCheckpointRecords; over > 0 {
		j.hist.Checkpoints = append([]CheckpointRecord(nil), j.hist.Checkpoints[over:]...)
	}
	j.histVer++
	j.mu.Unlock()
	j.poke()
}

func putEpoch(rs []EpochRecord, r EpochRecord) []EpochRecord {
	for i := range rs {
		if rs[i].Epoch == r.Epoch {
			rs[i] = r
			return rs
		}
		if rs[i].Epoch > r.Epoch {
			return append(rs[:i], append([]EpochRecord{r}, rs[i:]...)...)
		}
	}
	return append(rs, r)
}

func hasEpoch(rs []EpochRecord, epoch int) bool {
	for _, r := range rs {
		if r.Epoch == epoch {
			return true
		}
	}
	return false
}

// finite is v, or 0 for a NaN or an infinity (JSON has neither).
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func (j *journal) poke() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// run writes what changed whenever something is recorded (at most every
// minGap), and retries failed writes every second, until ctx ends.
func (j *journal) run(ctx context.Context) {
	const minGap = 200 * time.Millisecond
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-j.kick:
		case <-retry.C:
		}
		j.flush(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(minGap):
		}
	}
}

// flush writes the parts that changed, under the leader guard. A failure
// keeps them to write again; the write that succeeds after failures
// records the outage as an event.
func (j *journal) flush(ctx context.Context) {
	if j == nil {
		return
	}
	j.mu.Lock()
	var ops []clientv3.Op
	ev, hist := j.evVer, j.histVer
	if ev != j.evWritten {
		if b, err := json.Marshal(j.events); err == nil {
			ops = append(ops, clientv3.OpPut(j.keys.Events(), string(b)))
		}
	}
	if hist != j.histWrote {
		if b, err := json.Marshal(j.hist); err == nil {
			ops = append(ops, clientv3.OpPut(j.keys.History(), string(b)))
		}
	}
	j.mu.Unlock()
	if len(ops) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	resp, err := j.cli.Txn(wctx).If(j.guard()).Then(ops...).Commit()
	cancel()
	j.mu.Lock()
	defer j.mu.Unlock()
	if err != nil {
		j.etcdFailedLocked(err)
		return
	}
	// written, or refused (no longer the leader: the successor keeps the
	// journal); what was recorded since is written next
	j.evWritten, j.histWrote = ev, hist
	if resp.Succeeded {
		j.etcdWorksLocked()
	}
}

// etcdWrite notes the outcome of one of the leader's writes to etcd (the
// journal's, the progress record's): the first failure starts an outage,
// the next success ends it and records it as an event.
func (j *journal) etcdWrite(err error) {
	if j == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err != nil {
		j.etcdFailedLocked(err)
	} else {
		j.etcdWorksLocked()
	}
}

func (j *journal) etcdFailedLocked(err error) {
	if j.failing.IsZero() {
		j.failing, j.failingErr = time.Now(), err
	}
}

func (j *journal) etcdWorksLocked() {
	if j.failing.IsZero() {
		return
	}
	d := time.Since(j.failing).Round(100 * time.Millisecond)
	j.addLocked(Event{At: j.failing.UTC(), Kind: EventEtcdOutage, Detail: fmt.Sprintf("the leader could not write to etcd for %s: %v", d, j.failingErr)})
	j.failing, j.failingErr = time.Time{}, nil
	j.poke()
}

// termLost records, at the start of a term, that this coordinator's
// previous term ended early at lostAt, for why: its election lease ran
// out (etcd out of its reach for longer than the lease) or a write under
// its guard was refused.
func (j *journal) termLost(lostAt time.Time, why error) {
	if j == nil || lostAt.IsZero() {
		return
	}
	d := time.Since(lostAt).Round(100 * time.Millisecond)
	j.add(Event{At: lostAt.UTC(), Kind: EventTermLost, Role: string(cluster.RoleCoordinator), Member: j.self,
		Detail: fmt.Sprintf("its term as leader ended (%v); it stood again and leads again %s later", why, d)})
}

// start records the term's start (termStarted) and writes the journal
// until the returned stop is called; stop writes it a last time.
func (j *journal) start(ctx context.Context, previous string) (stop func()) {
	j.termStarted(previous)
	jctx, cancel := context.WithCancel(ctx)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		j.run(jctx)
	}()
	return func() {
		cancel()
		<-ended
		fctx, c := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer c()
		j.flush(fctx)
	}
}

// termStarted records how this coordinator came to lead: elected, or a
// failover when previous (the coordinator that led before, if the run was
// not over) is another one.
func (j *journal) termStarted(previous string) {
	switch {
	case previous == "":
		j.add(Event{Kind: EventElected, Role: string(cluster.RoleCoordinator), Member: j.self, Detail: "leads the run"})
	case previous == j.self:
		j.add(Event{Kind: EventElected, Role: string(cluster.RoleCoordinator), Member: j.self, Detail: "leads again (its earlier term ended)"})
	default:
		j.add(Event{Kind: EventFailover, Role: string(cluster.RoleCoordinator), Member: j.self, Detail: "leads after " + previous})
	}
}
