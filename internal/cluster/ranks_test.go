package cluster_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

// FollowRanks hands over the servers' addresses as membership changes: a
// server that crashes keeps its last address until it is back, and one
// that comes back on a new address is followed, without anyone asking.
func TestFollowRanks(t *testing.T) {
	ep := clustertest.Etcd(t)
	at := func(addr string) func(*cluster.MembershipConfig) {
		return func(c *cluster.MembershipConfig) { c.Self.Addrs = map[string]string{"grpc": addr} }
	}
	rank := func(r int) func(*cluster.MembershipConfig) {
		return func(c *cluster.MembershipConfig) { c.Self.Rank = r }
	}
	w := join(t, ep, cluster.RoleWorker, "w1")
	join(t, ep, cluster.RoleParamServer, "ps0", at("127.0.0.1:1000"), rank(0))
	ps1 := join(t, ep, cluster.RoleParamServer, "ps1", at("127.0.0.1:1001"), rank(1))
	addrs, err := cluster.WaitRanks(context.Background(), w, cluster.RoleParamServer, 2, "grpc")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		sets [][]string
	)
	last := func() []string {
		mu.Lock()
		defer mu.Unlock()
		if len(sets) == 0 {
			return nil
		}
		return sets[len(sets)-1]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		cluster.FollowRanks(ctx, w, cluster.RoleParamServer, 2, "grpc", addrs, func(a []string) {
			mu.Lock()
			sets = append(sets, a)
			mu.Unlock()
		}, time.Hour) // events only: the recheck must not be what finds the move
	}()
	ps1.Crash()
	waitFor(t, 5*time.Second, "ps1 out of the live view", func() bool { return len(w.Members(cluster.RoleParamServer)) == 1 })
	if l := last(); l != nil {
		t.Errorf("set %v while ps1 was down, want no call (its last address stays)", l)
	}
	join(t, ep, cluster.RoleParamServer, "ps1", at("127.0.0.1:2001"), rank(1))
	want := []string{"127.0.0.1:1000", "127.0.0.1:2001"}
	waitFor(t, 5*time.Second, "the new address of ps1", func() bool { return slices.Equal(last(), want) })
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(sets) != 1 {
		t.Errorf("set called %d times (%v), want once", len(sets), sets)
	}
}

// WaitRanks returns once every rank is live, and not before; it ends with
// ctx, and when the membership it waits on leaves.
func TestWaitRanks(t *testing.T) {
	ep := clustertest.Etcd(t)
	rank := func(r int, addr string) func(*cluster.MembershipConfig) {
		return func(c *cluster.MembershipConfig) {
			c.Self.Rank = r
			c.Self.Addrs = map[string]string{"grpc": addr}
		}
	}
	w := join(t, ep, cluster.RoleWorker, "w1")
	type result struct {
		addrs []string
		err   error
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan result, 1)
	go func() {
		addrs, err := cluster.WaitRanks(ctx, w, cluster.RoleParamServer, 2, "grpc")
		got <- result{addrs, err}
	}()
	join(t, ep, cluster.RoleParamServer, "ps0", rank(0, "127.0.0.1:1000"))
	// a worker with rank 1 is not parameter server 1
	join(t, ep, cluster.RoleWorker, "w2", rank(1, "127.0.0.1:1999"))
	waitFor(t, 5*time.Second, "ps0 and w2 in the live view", func() bool { return len(w.Members("")) == 3 })
	select {
	case r := <-got:
		t.Fatalf("WaitRanks returned %v, %v with one server of two", r.addrs, r.err)
	default:
	}
	join(t, ep, cluster.RoleParamServer, "ps1", rank(1, "127.0.0.1:1001"))
	select {
	case r := <-got:
		want := []string{"127.0.0.1:1000", "127.0.0.1:1001"}
		if r.err != nil || !slices.Equal(r.addrs, want) {
			t.Fatalf("WaitRanks: got %v, %v; want %v", r.addrs, r.err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRanks did not return 5 s after the last server joined")
	}

	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	if _, err := cluster.WaitRanks(short, w, cluster.RoleParamServer, 3, "grpc"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitRanks for a third server: got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("WaitRanks returned %v after its deadline of 200ms", d)
	}

	gone := join(t, ep, cluster.RoleWorker, "w3")
	go func() {
		_, err := cluster.WaitRanks(ctx, gone, cluster.RoleParamServer, 3, "grpc")
		got <- result{nil, err}
	}()
	leaveCtx, cancelLeave := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancelLeave()
	gone.Leave(leaveCtx)
	select {
	case r := <-got:
		if r.err == nil || ctx.Err() != nil {
			t.Errorf("WaitRanks on a membership that left: got %v, want an error before ctx ends", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRanks did not return 5 s after its membership left")
	}
}
