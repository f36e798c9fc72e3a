package cluster_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
	"github.com/tailorml/tailor/paramserver"
)

var _ paramserver.Membership = (*cluster.MemberIDs)(nil)

// A parameter server's view of the workers: ids without the role, in rank
// order, following joins and leaves of workers only.
func TestWatchIDs(t *testing.T) {
	endpoints := clustertest.Etcd(t)
	p := join(t, endpoints, cluster.RoleParamServer, "p1")
	rank := func(r int) func(*cluster.MembershipConfig) {
		return func(c *cluster.MembershipConfig) { c.Self.Rank = r }
	}
	join(t, endpoints, cluster.RoleWorker, "wb", rank(0))
	wa := join(t, endpoints, cluster.RoleWorker, "wa", rank(1))
	w := cluster.WatchIDs(p, cluster.RoleWorker)
	defer w.Close()
	waitFor(t, 5*time.Second, "workers [wb wa]", func() bool {
		ids, _ := w.Members()
		return slices.Equal(ids, []string{"wb", "wa"})
	})
	_, changed := w.Members()
	join(t, endpoints, cluster.RoleCoordinator, "c1")
	waitFor(t, 5*time.Second, "the coordinator", func() bool { return len(p.Members(cluster.RoleCoordinator)) == 1 })
	select {
	case <-changed:
		t.Error("a coordinator joining changed the workers")
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wa.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("no change after a worker left")
	}
	if ids, _ := w.Members(); !slices.Equal(ids, []string{"wb"}) {
		t.Errorf("workers after wa left: %v, want [wb]", ids)
	}
}
