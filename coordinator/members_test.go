package coordinator

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tailorml/tailor/internal/cluster"
)

// memberRig is the watchdog's rig with a membership the test changes.
type memberRig struct {
	*watchdogRig
	mu      sync.Mutex
	workers []string
}

func newMemberRig(t *testing.T, workers ...string) *memberRig {
	t.Helper()
	r := &memberRig{watchdogRig: newWatchdogRig(t), workers: workers}
	l := r.l
	l.lost = make(chan struct{})
	l.stepsGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "step"})
	l.memberList = func(role cluster.Role) []cluster.Member {
		r.mu.Lock()
		defer r.mu.Unlock()
		var ms []cluster.Member
		if role == cluster.RoleWorker {
			for _, w := range r.workers {
				ms = append(ms, cluster.Member{ID: w, Role: cluster.RoleWorker})
			}
		}
		return ms
	}
	return r
}

// setWorkers changes the live workers and wakes the board, as the
// leader's membership watch does at every event.
func (r *memberRig) setWorkers(ws ...string) {
	r.mu.Lock()
	r.workers = ws
	r.mu.Unlock()
	r.l.board.broadcast()
}

func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: still waiting after 5 s", what)
		return nil
	}
}

// With no live worker the sync loop waits for the membership, not a
// clock: a worker that joins opens the step at once; a rollback ends the
// wait.
func TestSyncEpochWaitsForMembership(t *testing.T) {
	r := newMemberRig(t)
	l := r.l
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := newAttempt()
	done := make(chan error, 1)
	go func() { _, err := l.syncEpoch(ctx, a); done <- err }()
	r.setWorkers("w1")
	pollUntil(t, 5*time.Second, "step 0 opened for w1", func() bool { return slices.Equal(l.steps.Participants(0), []string{"w1"}) })
	cancel()
	if err := waitErr(t, done, "syncEpoch after cancel"); !errors.Is(err, context.Canceled) {
		t.Errorf("syncEpoch: %v; want context.Canceled", err)
	}

	r2 := newMemberRig(t)
	a2 := newAttempt()
	done2 := make(chan error, 1)
	go func() { _, err := r2.l.syncEpoch(context.Background(), a2); done2 <- err }()
	a2.startRollback("test", func() {})
	if err := waitErr(t, done2, "syncEpoch after a rollback"); !errors.Is(err, errRollback) {
		t.Errorf("syncEpoch: %v; want errRollback", err)
	}
}

// waitWorkers returns once the run's workers are live, looking again at
// every membership event.
func TestWaitWorkersOnMembership(t *testing.T) {
	r := newMemberRig(t)
	l := r.l
	l.spec.Workers = 2
	done := make(chan error, 1)
	go func() { done <- l.waitWorkers(context.Background(), newAttempt(), false) }()
	r.setWorkers("w1")
	select {
	case err := <-done:
		t.Fatalf("waitWorkers returned with one worker of two: %v", err)
	default:
	}
	r.setWorkers("w1", "w2")
	if err := waitErr(t, done, "waitWorkers with both workers"); err != nil {
		t.Errorf("waitWorkers: %v", err)
	}
}

// At the run's end the leader waits for the workers to leave, at most
// the grace.
func TestWaitWorkersLeave(t *testing.T) {
	r := newMemberRig(t, "w1")
	done := make(chan error, 1)
	go func() { r.l.waitWorkersLeave(context.Background(), time.Hour); done <- nil }()
	r.setWorkers()
	waitErr(t, done, "waitWorkersLeave after the last worker left")

	start := time.Now()
	newMemberRig(t, "w1").l.waitWorkersLeave(context.Background(), 50*time.Millisecond)
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("returned after %v with a worker still live; want the grace, 50ms", el)
	}
}

// The membership watch wakes the board at every event; a benched worker
// that asks for work wakes it too.
func TestBoardWokenByMembership(t *testing.T) {
	r := newMemberRig(t)
	l := r.l
	events := make(chan cluster.Event)
	watched := make(chan struct{})
	go func() { l.watch(events); close(watched) }()
	wake := l.board.wakeCh()
	events <- cluster.Event{Kind: cluster.EventJoined, Member: cluster.Member{ID: "w9", Role: cluster.RoleWorker}}
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatal("a membership event did not wake the board")
	}
	close(events)
	<-watched

	l.benchWorkers([]string{"w1"})
	wake = l.board.wakeCh()
	l.unbench("w2") // not benched: nothing changes
	select {
	case <-wake:
		t.Fatal("unbenching a worker that was not benched woke the board")
	default:
	}
	l.unbench("w1")
	select {
	case <-wake:
	default:
		t.Fatal("a benched worker asking for work did not wake the board")
	}
}
