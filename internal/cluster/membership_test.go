package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

const testTTL = 2 * time.Second

// testLog sends Info and above to t.Log.
func testLog(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// join starts a member with its own etcd client and fast failure
// detection; it leaves at cleanup.
func join(tb testing.TB, endpoints []string, role cluster.Role, id string, opts ...func(*cluster.MembershipConfig)) *cluster.Membership {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := cluster.MembershipConfig{
		Client:      clustertest.Client(tb, endpoints),
		Keys:        cluster.RunKeys("test"),
		Self:        cluster.Member{ID: id, Role: role, Addrs: map[string]string{"grpc": "127.0.0.1:9" + id[len(id)-1:]}},
		TTL:         testTTL,
		FastFailure: true,
		Log:         testLog(tb),
	}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := cluster.Join(ctx, cfg)
	if err != nil {
		tb.Fatalf("join %s/%s: %v", role, id, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		m.Leave(ctx)
	})
	return m
}

// waitFor polls cond until it holds or d passes.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder collects the events of one subscription.
type recorder struct {
	mu     sync.Mutex
	events []cluster.Event
}

func record(tb testing.TB, m *cluster.Membership) *recorder {
	ch, stop := m.Subscribe()
	tb.Cleanup(stop)
	r := &recorder{}
	go func() {
		for e := range ch {
			r.mu.Lock()
			r.events = append(r.events, e)
			r.mu.Unlock()
		}
	}()
	return r
}

// find returns the first event of kind about id.
func (r *recorder) find(kind cluster.EventKind, id string) (cluster.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && e.Member.ID == id {
			return e, true
		}
	}
	return cluster.Event{}, false
}

func (r *recorder) wait(tb testing.TB, d time.Duration, kind cluster.EventKind, id string) cluster.Event {
	tb.Helper()
	var ev cluster.Event
	waitFor(tb, d, fmt.Sprintf("event %s of %s", kind, id), func() bool {
		var ok bool
		ev, ok = r.find(kind, id)
		return ok
	})
	return ev
}

func ids(ms []cluster.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Role)+"/"+m.ID)
	}
	slices.Sort(out)
	return out
}

func seesAll(want []string, ms ...*cluster.Membership) func() bool {
	return func() bool {
		for _, m := range ms {
			if !slices.Equal(ids(m.Members("")), want) {
				return false
			}
		}
		return true
	}
}

func startThree(tb testing.TB, endpoints []string, opts ...func(*cluster.MembershipConfig)) (c, p, w *cluster.Membership) {
	tb.Helper()
	c = join(tb, endpoints, cluster.RoleCoordinator, "c1", opts...)
	p = join(tb, endpoints, cluster.RoleParamServer, "p1", opts...)
	w = join(tb, endpoints, cluster.RoleWorker, "w1", opts...)
	want := []string{"coordinator/c1", "paramserver/p1", "worker/w1"}
	waitFor(tb, 5*time.Second, "3 members to see each other", seesAll(want, c, p, w))
	return c, p, w
}

func TestMembershipSeeEachOther(t *testing.T) {
	c, p, w := startThree(t, clustertest.Etcd(t))
	for _, m := range []*cluster.Membership{c, p, w} {
		ws := m.Members(cluster.RoleWorker)
		if len(ws) != 1 || ws[0].ID != "w1" {
			t.Fatalf("%s: Members(worker) = %v, want [w1]", m.Self().ID, ids(ws))
		}
		if got, want := ws[0].Addrs["grpc"], "127.0.0.1:91"; got != want {
			t.Errorf("%s: worker grpc addr = %q, want %q", m.Self().ID, got, want)
		}
		if got, want := ws[0].Addrs[cluster.AddrGossip], w.Self().Addrs[cluster.AddrGossip]; got == "" || got != want {
			t.Errorf("%s: worker gossip addr = %q, want %q", m.Self().ID, got, want)
		}
		if ps := m.Members(cluster.RoleParamServer); len(ps) != 1 || ps[0].Role != cluster.RoleParamServer {
			t.Errorf("%s: Members(paramserver) = %v", m.Self().ID, ids(ps))
		}
	}
}

// TestMembershipCrash kills a member as kill -9 would and measures how soon
// the others see it: gossip first, then the lease.
func TestMembershipCrash(t *testing.T) {
	c, p, w := startThree(t, clustertest.Etcd(t))
	rc, rp := record(t, c), record(t, p)

	t0 := time.Now()
	w.Crash()
	for _, r := range []struct {
		name string
		rec  *recorder
		m    *cluster.Membership
	}{{"coordinator", rc, c}, {"paramserver", rp, p}} {
		failed := r.rec.wait(t, 3*time.Second, cluster.EventFailed, "w1")
		if got := ids(r.m.Members("")); slices.Contains(got, "worker/w1") {
			t.Errorf("%s: after EventFailed, Members = %v still has the worker", r.name, got)
		}
		gone := r.rec.wait(t, testTTL+3*time.Second, cluster.EventGone, "w1")
		t.Logf("%s: gossip failed after %v, lease gone after %v (TTL %v)",
			r.name, failed.At.Sub(t0).Round(time.Millisecond), gone.At.Sub(t0).Round(time.Millisecond), testTTL)
		if !gone.At.After(failed.At) {
			t.Errorf("%s: EventGone at %v before EventFailed at %v", r.name, gone.At, failed.At)
		}
	}
	if got, want := ids(c.Members("")), []string{"coordinator/c1", "paramserver/p1"}; !slices.Equal(got, want) {
		t.Errorf("Members after crash = %v, want %v", got, want)
	}
}

func TestMembershipLeave(t *testing.T) {
	c, _, w := startThree(t, clustertest.Etcd(t))
	rc := record(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := w.Leave(ctx); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	left := rc.wait(t, 3*time.Second, cluster.EventLeft, "w1")
	gone := rc.wait(t, 3*time.Second, cluster.EventGone, "w1")
	t.Logf("graceful leave: left after %v, gone after %v", left.At.Sub(t0).Round(time.Millisecond), gone.At.Sub(t0).Round(time.Millisecond))
	if _, ok := rc.find(cluster.EventFailed, "w1"); ok {
		t.Errorf("graceful leave reported as EventFailed")
	}
	if got := ids(c.Members("")); slices.Contains(got, "worker/w1") {
		t.Errorf("Members after leave = %v, still has the worker", got)
	}
	if err := w.Leave(ctx); err != nil {
		t.Errorf("second Leave: %v", err)
	}
}

func TestMembershipSecretKey(t *testing.T) {
	ep := clustertest.Etcd(t)
	keyA := []byte("0123456789abcdef")
	keyB := []byte("fedcba9876543210")
	withKey := func(k []byte) func(*cluster.MembershipConfig) {
		return func(c *cluster.MembershipConfig) { c.SecretKey = k }
	}
	c := join(t, ep, cluster.RoleCoordinator, "c1", withKey(keyA))
	p := join(t, ep, cluster.RoleParamServer, "p1", withKey(keyA))
	waitFor(t, 5*time.Second, "the two members with the same key to see each other",
		seesAll([]string{"coordinator/c1", "paramserver/p1"}, c, p))

	jctx, jcancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer jcancel()
	_, err := cluster.Join(jctx, cluster.MembershipConfig{
		Client:      clustertest.Client(t, ep),
		Keys:        cluster.RunKeys("test"),
		Self:        cluster.Member{ID: "w1", Role: cluster.RoleWorker},
		TTL:         testTTL,
		FastFailure: true,
		SecretKey:   keyB,
	})
	if !errors.Is(err, cluster.ErrGossipJoin) {
		t.Fatalf("Join with another key: err = %v, want ErrGossipJoin", err)
	}
	for _, m := range []*cluster.Membership{c, p} {
		if got := ids(m.Members("")); slices.Contains(got, "worker/w1") {
			t.Errorf("%s: Members = %v has the member with the wrong key", m.Self().ID, got)
		}
	}
	// A failed Join revokes its registration.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli := clustertest.Client(t, ep)
	if _, err := cluster.Get(ctx, cli, cluster.RunKeys("test").Member(cluster.RoleWorker, "w1")); !errors.Is(err, cluster.ErrNotFound) {
		t.Errorf("member key after failed Join: err = %v, want ErrNotFound", err)
	}
}

// TestMembershipEtcdRestart stops etcd until every member has lost its
// lease, restarts it on the same dir and ports, and checks that they all
// register again.
func TestMembershipEtcdRestart(t *testing.T) {
	e := clustertest.EtcdServer(t)
	// Close the restarted etcd last, after the members and their clients:
	// open client streams make Close wait ~5 s.
	var e2 *cluster.EmbeddedEtcd
	t.Cleanup(func() {
		if e2 != nil {
			e2.Close()
		}
	})
	c, p, w := startThree(t, e.Endpoints())
	all := []*cluster.Membership{c, p, w}
	var recs []*recorder
	for _, m := range all {
		recs = append(recs, record(t, m))
	}

	t0 := time.Now()
	e.Close() // graceful: waits ~5 s for the members' streams
	t.Logf("etcd stopped in %v", time.Since(t0).Round(time.Millisecond))
	for i, r := range recs {
		ev := r.wait(t, testTTL+5*time.Second, cluster.EventLeaseLost, all[i].Self().ID)
		t.Logf("%s: lease lost %v after etcd stopped", all[i].Self().ID, ev.At.Sub(t0).Round(time.Millisecond))
	}
	// Gossip still holds the view together while etcd is down.
	want := []string{"coordinator/c1", "paramserver/p1", "worker/w1"}
	if !seesAll(want, all...)() {
		t.Errorf("view during etcd outage lost members: %v", ids(c.Members("")))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	down := time.Since(t0)
	t1 := time.Now()
	var err error
	e2, err = cluster.StartEtcd(ctx, e.Config())
	if err != nil {
		t.Fatalf("restart etcd: %v", err)
	}
	for i, r := range recs {
		ev := r.wait(t, 15*time.Second, cluster.EventRegistered, all[i].Self().ID)
		t.Logf("%s: registered again %v after etcd restarted (down %v)", all[i].Self().ID, ev.At.Sub(t1).Round(time.Millisecond), down.Round(time.Millisecond))
	}
	waitFor(t, 5*time.Second, "all to see all after the restart", seesAll(want, all...))
	// The members kept their leases (etcd extends them on restart), so
	// nobody saw anybody go, not even once the extension has run out.
	time.Sleep(testTTL + time.Second)
	for i, r := range recs {
		for _, m := range all {
			if ev, ok := r.find(cluster.EventGone, m.Self().ID); ok {
				t.Errorf("%s saw %s gone at %v", all[i].Self().ID, m.Self().ID, ev.At.Sub(t1).Round(time.Millisecond))
			}
		}
	}

	cli := clustertest.Client(t, e2.Endpoints())
	resp, err := cli.Get(ctx, cluster.RunKeys("test").Members(), clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("list members: %v", err)
	}
	if len(resp.Kvs) != 3 {
		t.Errorf("member keys after restart = %d, want 3", len(resp.Kvs))
	}
	// The new registrations hold: the old leases (which etcd extended on
	// restart) must not take the keys with them when they expire.
	for _, kv := range resp.Kvs {
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil || ttl.TTL <= 0 {
			t.Errorf("lease of %s: ttl %v, err %v", kv.Key, ttl, err)
		}
	}
}

// TestMembershipRestartSameID restarts a crashed member under the same id
// before its old lease expires: the old incarnation is gone, the new one
// live, and the old lease's expiry does not take the new record with it.
func TestMembershipRestartSameID(t *testing.T) {
	ep := clustertest.Etcd(t)
	c, _, w := startThree(t, ep)
	rc := record(t, c)
	oldAddr := w.Self().Addrs[cluster.AddrGossip]
	w.Crash()
	w2 := join(t, ep, cluster.RoleWorker, "w1")
	newAddr := w2.Self().Addrs[cluster.AddrGossip]
	rc.wait(t, 3*time.Second, cluster.EventGone, "w1")
	rc.wait(t, 3*time.Second, cluster.EventJoined, "w1")
	waitFor(t, 3*time.Second, "the new incarnation in the view", func() bool {
		ws := c.Members(cluster.RoleWorker)
		return len(ws) == 1 && ws[0].Addrs[cluster.AddrGossip] == newAddr
	})

	// Wait for the old lease to expire (4 leases: c, p, old w, new w).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli := clustertest.Client(t, ep)
	waitFor(t, testTTL+3*time.Second, "the old lease to expire", func() bool {
		resp, err := cli.Leases(ctx)
		return err == nil && len(resp.Leases) == 3
	})
	ws := c.Members(cluster.RoleWorker)
	if len(ws) != 1 || ws[0].Addrs[cluster.AddrGossip] != newAddr {
		t.Errorf("workers after the old lease expired = %+v, want w1 at %s (old %s)", ws, newAddr, oldAddr)
	}
	if _, err := cluster.Get(ctx, cli, cluster.RunKeys("test").Member(cluster.RoleWorker, "w1")); err != nil {
		t.Errorf("new record after the old lease expired: %v", err)
	}
}

func TestJoinConfigErrors(t *testing.T) {
	ep := clustertest.Etcd(t)
	cli := clustertest.Client(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	big := map[string]string{"blob": strings.Repeat("x", 600)}
	tests := []struct {
		name string
		cfg  cluster.MembershipConfig
		want error
	}{
		{"no client", cluster.MembershipConfig{Keys: cluster.RunKeys("t"), Self: cluster.Member{ID: "a", Role: cluster.RoleWorker}}, nil},
		{"no keys", cluster.MembershipConfig{Client: cli, Self: cluster.Member{ID: "a", Role: cluster.RoleWorker}}, nil},
		{"bad role", cluster.MembershipConfig{Client: cli, Keys: cluster.RunKeys("t"), Self: cluster.Member{ID: "a", Role: "chef"}}, nil},
		{"no id", cluster.MembershipConfig{Client: cli, Keys: cluster.RunKeys("t"), Self: cluster.Member{Role: cluster.RoleWorker}}, nil},
		{"meta too large", cluster.MembershipConfig{Client: cli, Keys: cluster.RunKeys("t"), Self: cluster.Member{ID: "a", Role: cluster.RoleWorker, Extra: big}}, cluster.ErrMetaTooLarge},
	}
	for _, tt := range tests {
		m, err := cluster.Join(ctx, tt.cfg)
		if err == nil {
			m.Leave(ctx)
			t.Errorf("%s: Join succeeded, want an error", tt.name)
			continue
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}
