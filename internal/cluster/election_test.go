package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

const leaderTTL = 2 * time.Second

func candidate(tb testing.TB, endpoints []string, id string) (*cluster.Election, func()) {
	tb.Helper()
	cli, err := cluster.NewClient(endpoints)
	if err != nil {
		tb.Fatalf("client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	el, err := cluster.NewElection(cluster.ElectionConfig{
		Client: cli,
		Keys:   cluster.RunKeys("test"),
		Self:   cluster.Member{ID: id, Role: cluster.RoleCoordinator, Addrs: map[string]string{"grpc": id + ":1"}},
		TTL:    leaderTTL,
	})
	if err != nil {
		tb.Fatalf("NewElection: %v", err)
	}
	// kill closes the client without resigning or revoking, as kill -9 would.
	return el, func() { cli.Close() }
}

type campaignResult struct {
	term *cluster.Term
	err  error
	at   time.Time
}

func campaignAsync(ctx context.Context, el *cluster.Election) <-chan campaignResult {
	ch := make(chan campaignResult, 1)
	go func() {
		t, err := el.Campaign(ctx)
		ch <- campaignResult{t, err, time.Now()}
	}()
	return ch
}

func TestElectionTakeover(t *testing.T) {
	ep := clustertest.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, killA := candidate(t, ep, "a")
	b, _ := candidate(t, ep, "b")
	watcher, _ := candidate(t, ep, "watcher")

	if _, err := watcher.Leader(ctx); !errors.Is(err, cluster.ErrNoLeader) {
		t.Fatalf("Leader before any campaign: err = %v, want ErrNoLeader", err)
	}
	obs := watcher.Observe(ctx)
	if l := <-obs; l.Key != "" {
		t.Fatalf("first observed leader = %+v, want none", l)
	}

	termA, err := a.Campaign(ctx)
	if err != nil {
		t.Fatalf("a.Campaign: %v", err)
	}
	if !termA.IsLeader() || termA.Leader().Member.ID != "a" {
		t.Fatalf("a's term: IsLeader %v, leader %+v", termA.IsLeader(), termA.Leader())
	}
	if l := <-obs; l.Member.ID != "a" || l.Member.Addrs["grpc"] != "a:1" {
		t.Fatalf("observed leader = %+v, want a", l)
	}
	bres := campaignAsync(ctx, b)

	// A write fenced by a's term succeeds while a leads.
	cli := clustertest.Client(t, ep)
	key := cluster.RunKeys("test").Status()
	if _, err := cluster.Create(ctx, cli, key, []byte(`{"epoch":0}`), termA.Guard()); err != nil {
		t.Fatalf("write guarded by the leader's term: %v", err)
	}
	select {
	case r := <-bres:
		t.Fatalf("b won while a leads: %+v", r)
	default:
	}

	t0 := time.Now()
	killA()
	var r campaignResult
	select {
	case r = <-bres:
	case <-time.After(leaderTTL + 5*time.Second):
		t.Fatalf("b not leader %v after a died", leaderTTL+5*time.Second)
	}
	if r.err != nil {
		t.Fatalf("b.Campaign: %v", r.err)
	}
	t.Logf("takeover: b leader %v after a was killed (TTL %v)", r.at.Sub(t0).Round(time.Millisecond), leaderTTL)
	termB := r.term
	if l, err := watcher.Leader(ctx); err != nil || l.Member.ID != "b" {
		t.Errorf("Leader after takeover = %+v, %v; want b", l, err)
	}
	if termB.Leader().Rev <= termA.Leader().Rev {
		t.Errorf("b's term rev %d <= a's %d", termB.Leader().Rev, termA.Leader().Rev)
	}
	waitFor(t, 3*time.Second, "observer to see b", func() bool {
		for {
			select {
			case l := <-obs:
				if l.Member.ID == "b" {
					return true
				}
			default:
				return false
			}
		}
	})
	// a's session is gone: Done closes, and its fence no longer admits writes.
	waitFor(t, 3*time.Second, "a's term to end", func() bool { return !termA.IsLeader() })
	_, err = cluster.CAS(ctx, cli, key, 0, []byte(`{"epoch":1}`), termA.Guard())
	var ce *cluster.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("write fenced by the deposed leader: err = %v, want ConflictError", err)
	}

	// Resign hands over at once.
	c, _ := candidate(t, ep, "c")
	cres := campaignAsync(ctx, c)
	t1 := time.Now()
	if err := termB.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	select {
	case r = <-cres:
	case <-time.After(3 * time.Second):
		t.Fatal("c not leader 3s after b resigned")
	}
	if r.err != nil {
		t.Fatalf("c.Campaign: %v", r.err)
	}
	t.Logf("resign: c leader %v after b resigned", r.at.Sub(t1).Round(time.Millisecond))
	select {
	case <-termB.Done():
	default:
		t.Error("b's Done not closed after Resign")
	}
	if err := termB.Resign(ctx); err != nil {
		t.Errorf("second Resign: %v", err)
	}
	r.term.Resign(ctx)
}

func TestCampaignCancel(t *testing.T) {
	ep := clustertest.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, _ := candidate(t, ep, "a")
	b, _ := candidate(t, ep, "b")
	ta, err := a.Campaign(ctx)
	if err != nil {
		t.Fatalf("a.Campaign: %v", err)
	}
	defer ta.Resign(ctx)
	bctx, bcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer bcancel()
	if _, err := b.Campaign(bctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b.Campaign while a leads: err = %v, want deadline exceeded", err)
	}
	// b's abandoned candidacy must not linger as a queued candidate.
	cli := clustertest.Client(t, ep)
	resp, err := cli.Get(ctx, cluster.RunKeys("test").Election(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Errorf("candidates after b gave up = %d, want 1", len(resp.Kvs))
	}
}
