package cluster_test

import (
	"context"
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
