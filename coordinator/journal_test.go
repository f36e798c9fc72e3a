package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/eval"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

// termOf makes id the run's leader and returns its term.
func termOf(t *testing.T, ctx context.Context, cli *clientv3.Client, keys cluster.Keys, id string) *cluster.Term {
	t.Helper()
	e, err := cluster.NewElection(cluster.ElectionConfig{Client: cli, Keys: keys, Self: cluster.Member{ID: id, Role: cluster.RoleCoordinator}})
	if err != nil {
		t.Fatal(err)
	}
	term, err := e.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return term
}

// The journal in a real etcd: what a leader records is written under its
// guard, the next leader goes on with it (a failover is recorded as
// such), the log keeps the newest MaxEvents, a deposed leader writes
// nothing, and a rollback's restored history drops the undone epochs.
func TestJournal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := clustertest.Client(t, clustertest.Etcd(t))
	keys := cluster.RunKeys("j")
	log := slog.New(slog.DiscardHandler)

	readBack := func() (EventLog, History) {
		t.Helper()
		var l EventLog
		var h History
		if _, err := cluster.GetJSON(ctx, cli, keys.Events(), &l); err != nil {
			t.Fatal(err)
		}
		if _, err := cluster.GetJSON(ctx, cli, keys.History(), &h); err != nil {
			t.Fatal(err)
		}
		return l, h
	}

	termA := termOf(t, ctx, cli, keys, "coord-a")
	a := loadJournal(ctx, cli, keys, termA.Guard, "coord-a", log)
	stopA := a.start(ctx, "")
	a.member(cluster.Event{Kind: cluster.EventFailed, Member: cluster.Member{ID: "w1", Role: cluster.RoleWorker}, At: time.Now()}, cluster.Member{ID: "coord-a"})
	a.member(cluster.Event{Kind: cluster.EventGone, Member: cluster.Member{ID: "w1", Role: cluster.RoleWorker}, At: time.Now()}, cluster.Member{ID: "coord-a"})
	a.member(cluster.Event{Kind: cluster.EventUpdated, Member: cluster.Member{ID: "w0", Role: cluster.RoleWorker}, At: time.Now()}, cluster.Member{ID: "coord-a"})
	labels := []string{"dress", "sandal"}
	for e := 1; e <= 3; e++ {
		ep := eval.Epoch{Epoch: e, TrainLoss: 1 / float64(e), LR: 1e-3, Val: eval.Scores{Loss: 0.5, MAP: 0.1 * float64(e), AP: []float64{0.5, math.NaN()}, F1: []float64{0.4, 0}, Support: []int{3, 0}}}
		a.epoch(ep, labels, e)
		a.checkpoint(CheckpointRecord{Name: fmt.Sprint(e), Reason: "epoch", Epochs: e, Bytes: 10})
	}
	stopA()
	l, h := readBack()
	if got := kinds(l); fmt.Sprint(got) != "[elected lost lost]" || l.Events[1].By != ByGossip || l.Events[2].By != ByLease || l.Events[0].Detail != "leads the run" {
		t.Errorf("events %v (%+v), want elected, lost by gossip, lost by lease", got, l.Events)
	}
	if len(h.Epochs) != 3 || h.Best != 3 || h.Eval == nil || h.Eval.Epoch != 3 || len(h.Checkpoints) != 3 {
		t.Fatalf("history %+v", h)
	}
	if s := h.Eval.Labels; s[0].AP == nil || *s[0].AP != 0.5 || s[1].AP != nil || s[0].F1 != 0.4 || s[0].Support != 3 {
		t.Errorf("per-label scores %+v: want dress AP 0.5, F1 0.4, 3 positives, and sandal without an AP", s)
	}

	// coord-a's term ends; coord-b leads after it and goes on with the journal
	if err := termA.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	termB := termOf(t, ctx, cli, keys, "coord-b")
	b := loadJournal(ctx, cli, keys, termB.Guard, "coord-b", log)
	stopB := b.start(ctx, "coord-a")
	if e := b.events.Events[len(b.events.Events)-1]; e.Kind != EventFailover || e.Detail != "leads after coord-a" || e.Seq != 4 || e.Leader != "coord-b" {
		t.Errorf("the new leader's first event %+v, want seq 4: failover, leads after coord-a", e)
	}
	// a rollback to the checkpoint after epoch 2: epoch 3 is undone
	b.add(Event{Kind: EventRollback, Detail: "parameter server ps1 lost"})
	b.restored([]eval.Epoch{{Epoch: 1}, {Epoch: 2}}, 2)
	for i := range MaxEvents {
		b.add(Event{Kind: EventJoined, Role: "worker", Member: fmt.Sprint("w", i)})
	}
	stopB()
	l, h = readBack()
	if len(l.Events) != MaxEvents || l.Dropped != 5 || l.Events[len(l.Events)-1].Seq != int64(MaxEvents+5) || l.Events[0].Seq != 6 {
		t.Errorf("%d events kept (seq %d to %d), %d dropped; want the newest %d, 5 dropped", len(l.Events), l.Events[0].Seq, l.Events[len(l.Events)-1].Seq, l.Dropped, MaxEvents)
	}
	if len(h.Epochs) != 2 || h.Best != 2 || h.Epochs[1].Epoch != 2 || h.Epochs[1].At.IsZero() {
		t.Errorf("after the rollback: epochs %+v, best %d; want epochs 1 and 2 as recorded, best 2", h.Epochs, h.Best)
	}
	b2 := loadJournal(ctx, cli, keys, termB.Guard, "coord-b", log)
	if n := len(b2.events.Events); n != MaxEvents {
		t.Fatalf("%d events read back", n)
	}

	// a deposed leader's writes are refused by the guard
	if err := termB.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	b2.add(Event{Kind: EventDone})
	b2.flush(ctx)
	l, _ = readBack()
	if last := l.Events[len(l.Events)-1]; last.Kind == EventDone {
		t.Errorf("a deposed leader wrote the event log: %+v", last)
	}
}

// A new leader records how it came to lead.
func TestJournalTermStart(t *testing.T) {
	for _, c := range []struct{ previous, kind, detail string }{
		{"", EventElected, "leads the run"},
		{"coord-a", EventElected, "leads again (its earlier term ended)"},
		{"coord-b", EventFailover, "leads after coord-b"},
	} {
		j := &journal{self: "coord-a", kick: make(chan struct{}, 1)}
		j.add(Event{}) // the log so far
		j.termStarted(c.previous)
		e := j.events.Events[len(j.events.Events)-1]
		if e.Kind != c.kind || e.Detail != c.detail || e.Member != "coord-a" || e.Seq != 2 {
			t.Errorf("previous %q: %+v, want %s %q", c.previous, e, c.kind, c.detail)
		}
	}
}

func kinds(l EventLog) []string {
	var out []string
	for _, e := range l.Events {
		out = append(out, e.Kind)
	}
	return out
}

// A failed write to etcd starts an outage and the next one that works
// records it; a term lost to an expired election lease is recorded by the
// next term.
func TestJournalOutages(t *testing.T) {
	j := &journal{self: "coord-a", kick: make(chan struct{}, 1)}
	j.etcdWrite(nil)
	if n := len(j.events.Events); n != 0 {
		t.Fatalf("%d events after a write that worked", n)
	}
	j.etcdWrite(errors.New("context deadline exceeded"))
	j.etcdWrite(errors.New("connection refused"))
	if n := len(j.events.Events); n != 0 {
		t.Fatalf("%d events while etcd is out of reach, want none yet", n)
	}
	j.etcdWrite(nil)
	j.etcdWrite(nil)
	if n := len(j.events.Events); n != 1 {
		t.Fatalf("%d events after the outage, want 1", n)
	}
	if e := j.events.Events[0]; e.Kind != EventEtcdOutage || !strings.Contains(e.Detail, "context deadline exceeded") || !strings.Contains(e.Detail, "could not write to etcd for") {
		t.Errorf("the outage's event: %+v", e)
	}
	j.termLost(time.Time{}, nil)
	j.termLost(time.Now().Add(-3*time.Second), errLostLeadership)
	if n := len(j.events.Events); n != 2 {
		t.Fatalf("%d events, want the outage and the lost term", n)
	}
	if e := j.events.Events[1]; e.Kind != EventTermLost || e.Member != "coord-a" || !strings.Contains(e.Detail, "lost leadership") || !strings.Contains(e.Detail, "leads again 3") {
		t.Errorf("the lost term's event: %+v", e)
	}
}
