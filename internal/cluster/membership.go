package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// AddrGossip is the Addrs key under which Join records the member's gossip
// (memberlist) address.
const AddrGossip = "gossip"

// DefaultMemberTTL is the lease TTL of a member key when MembershipConfig.TTL
// is zero: how long a member whose process died stays in etcd.
const DefaultMemberTTL = 3 * time.Second

// Member is one process of a run as the others see it.
type Member struct {
	ID   string `json:"id"`
	Role Role   `json:"role"`
	// Rank orders members of a role (e.g. the worker rank that seeds
	// dropout masks and orders sums). Assigned by whoever starts the
	// process; not checked for uniqueness here.
	Rank int `json:"rank,omitempty"`
	// Addrs are named endpoints, e.g. "grpc", "metrics", "gossip".
	Addrs map[string]string `json:"addrs,omitempty"`
	// Extra is free-form metadata.
	Extra map[string]string `json:"extra,omitempty"`
}

// record is the JSON value of a members/<role>/<id> key.
type record struct {
	Member
	// Node is the memberlist node name of this incarnation of the member;
	// it ties the etcd record to one gossip identity, so a restarted
	// process (same role and id, new node) is a new member.
	Node string `json:"node"`
	// Leaving is written by Leave just before it revokes the lease. etcd's
	// watch delivers it before the deletion, so peers always see a graceful
	// leave as EventLeft, even when the gossip announcement arrives late.
	Leaving bool `json:"leaving,omitempty"`
}

// gossipMeta is the memberlist node meta (at most memberlist.MetaMaxSize
// bytes). The gossip address is the node's own address and is not repeated.
type gossipMeta struct {
	Member
	// Leaving is set just before a graceful leave, so that peers can tell a
	// leave from a failure (memberlist reports both as NotifyLeave).
	Leaving bool `json:"leaving,omitempty"`
}

// EventKind says what happened to a member.
type EventKind int

// The membership events. Joined/Failed/Left/Updated describe the live view
// (Members); Gone is the etcd confirmation; LeaseLost/Registered are about
// the local member's own registration.
const (
	// EventJoined: the member became live (its lease key exists and gossip
	// has it alive). Also sent when a member that gossip had reported dead
	// turns out alive while its lease held.
	EventJoined EventKind = iota + 1
	// EventUpdated: a live member's etcd record changed.
	EventUpdated
	// EventFailed: gossip reports the member dead (not a graceful leave).
	// It is out of the live view now; its lease has not expired yet. Fast
	// (about a second with FastFailure) but can be a false positive under
	// load: EventJoined follows if the member refutes it.
	EventFailed
	// EventLeft: the member announced a graceful leave in gossip.
	EventLeft
	// EventGone: the member's key was deleted: its lease expired or was
	// revoked. Final for this incarnation; reclaim its work on this event.
	EventGone
	// EventLeaseLost: the local member lost its lease (etcd unreachable
	// for a TTL, or the lease expired). It keeps retrying to register.
	EventLeaseLost
	// EventRegistered: the local member registered again under a new lease
	// after EventLeaseLost.
	EventRegistered
)

var eventNames = [...]string{"", "joined", "updated", "failed", "left", "gone", "lease-lost", "registered"}

func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is a change of membership. Events are edge-triggered hints, in
// order per Membership; the level is Members().
type Event struct {
	Kind   EventKind
	Member Member
	At     time.Time
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s/%s", e.Kind, e.Member.Role, e.Member.ID)
}

// MembershipConfig configures Join.
type MembershipConfig struct {
	// Client is the etcd client; Join does not close it.
	Client *clientv3.Client
	// Keys is the run's key builder (RunKeys).
	Keys Keys
	// Self is the local member. Join fills in Addrs[AddrGossip].
	Self Member
	// TTL is the member key's lease TTL, rounded up to whole seconds.
	// Default DefaultMemberTTL. etcd raises it to its minimum (1.5 election
	// timeouts: 2 s with etcd's default ticks).
	TTL time.Duration
	// GossipBind is the host:port memberlist listens on (TCP and UDP).
	// Default "127.0.0.1:0" (a free port).
	GossipBind string
	// GossipAdvertise is the host:port others reach memberlist at. Default:
	// the bound address.
	GossipAdvertise string
	// Seeds are extra gossip addresses to join besides the members found in
	// etcd. Failing to reach them is not an error.
	Seeds []string
	// SecretKey (16, 24 or 32 bytes) encrypts gossip. Members with another
	// key cannot join.
	SecretKey []byte
	// FastFailure detects a dead member in about 1.5 s: probe every
	// 400 ms, 300 ms probe timeout, suspicion multiplier 2. Otherwise
	// memberlist.DefaultLocalConfig (about 5 s).
	FastFailure bool
	// Gossip, if set, adjusts the memberlist config after the defaults
	// above (tests, tuning). Name, bind address, delegates and logger are
	// set by Join afterwards.
	Gossip func(*memberlist.Config)
	// Log receives membership and memberlist logs. Default: discard.
	Log *slog.Logger
}

// Errors of Join.
var (
	ErrMetaTooLarge = errors.New("cluster: member metadata exceeds the gossip meta limit")
	ErrGossipJoin   = errors.New("cluster: could not join gossip")
)

// Membership is the local member's registration and its view of the others.
//
// Liveness: a member is live while BOTH its lease key members/<role>/<id>
// exists in etcd AND gossip has its node alive (or merely suspect). Either
// side takes it out of the live view: gossip within about a second of a
// crash (EventFailed/EventLeft), the lease within TTL (EventGone). Gossip
// alone never makes a member live, so a process that cannot gossip with the
// others (e.g. a wrong SecretKey) is not live even while registered. Act on
// EventGone for anything that must not be undone (reassigning work units);
// use EventFailed to act sooner where a mistake is cheap (stop waiting for a
// member's gradient).
//
// While etcd is unreachable the view keeps the last etcd state, and gossip
// can still take members out of it; nothing is confirmed gone until etcd
// answers again.
type Membership struct {
	cli     *clientv3.Client
	keys    Keys
	ttl     int64 // lease TTL in seconds
	log     *slog.Logger
	self    record
	selfKey string
	ml      *memberlist.Memberlist

	metaMu sync.Mutex
	meta   gossipMeta

	mu      sync.Mutex
	members map[string]*entry    // by etcd key
	nodes   map[string]*nodeInfo // by memberlist node name
	subs    map[*subscriber]struct{}
	lease   clientv3.LeaseID
	closed  bool

	kick chan struct{} // wakes the gossip healer

	// The lease loop and the view loops (watch, healer) stop separately:
	// Leave stops the lease loop before it revokes the lease.
	stopLease context.CancelFunc
	leaseWG   sync.WaitGroup
	stopView  context.CancelFunc
	viewWG    sync.WaitGroup
	leaveOnce sync.Once
	leaveErr  error
}

type entry struct {
	rec    record
	modRev int64
	live   bool
}

type nodeState int

const (
	nodeAlive nodeState = iota + 1
	nodeDead
	nodeLeft
)

type nodeInfo struct {
	state nodeState
	meta  gossipMeta
}

// Join registers cfg.Self in etcd under a lease, joins the gossip of the
// members found there (and cfg.Seeds), and starts keeping the registration
// alive and the view up to date. It returns once the member is registered
// and gossip is joined: if etcd lists other members, Join retries until
// it reaches at least one of them or ctx ends (stale records of crashed
// members vanish within TTL). On error nothing is left running.
func Join(ctx context.Context, cfg MembershipConfig) (*Membership, error) {
	if cfg.Client == nil {
		return nil, errors.New("cluster: join: nil etcd client")
	}
	if cfg.Keys.prefix == "" {
		return nil, errors.New("cluster: join: empty Keys (use RunKeys)")
	}
	if cfg.Self.ID == "" || !cfg.Self.Role.Valid() {
		return nil, fmt.Errorf("cluster: join: bad member id %q / role %q", cfg.Self.ID, cfg.Self.Role)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultMemberTTL
	}
	if cfg.GossipBind == "" {
		cfg.GossipBind = "127.0.0.1:0"
	}
	lg := cfg.Log
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	self := cfg.Self
	self.Addrs = cloneMap(self.Addrs)
	self.Extra = cloneMap(self.Extra)
	delete(self.Addrs, AddrGossip)

	m := &Membership{
		cli:     cfg.Client,
		keys:    cfg.Keys,
		ttl:     int64(math.Ceil(cfg.TTL.Seconds())),
		log:     lg.With("member", string(self.Role)+"/"+self.ID),
		selfKey: cfg.Keys.Member(self.Role, self.ID),
		meta:    gossipMeta{Member: self},
		members: make(map[string]*entry),
		nodes:   make(map[string]*nodeInfo),
		subs:    make(map[*subscriber]struct{}),
		kick:    make(chan struct{}, 1),
	}
	if meta, _ := json.Marshal(m.meta); len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("join: meta is %d bytes, limit %d: %w", len(meta), memberlist.MetaMaxSize, ErrMetaTooLarge)
	}

	ml, err := m.startGossip(cfg)
	if err != nil {
		return nil, err
	}
	m.ml = ml
	self.Addrs[AddrGossip] = ml.LocalNode().Address()
	if cfg.GossipAdvertise != "" {
		self.Addrs[AddrGossip] = cfg.GossipAdvertise
	}
	m.self = record{Member: self, Node: ml.LocalNode().Name}

	fail := func(err error) (*Membership, error) {
		if lease := m.currentLease(); lease != 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			m.cli.Revoke(rctx, lease)
			cancel()
		}
		ml.Shutdown()
		return nil, err
	}
	lease, err := m.register(ctx)
	if err != nil {
		return fail(err)
	}
	m.mu.Lock()
	m.lease = lease
	m.mu.Unlock()

	rev, err := m.joinGossip(ctx, cfg.Seeds)
	if err != nil {
		return fail(err)
	}

	leaseCtx, stopLease := context.WithCancel(context.Background())
	viewCtx, stopView := context.WithCancel(context.Background())
	m.stopLease, m.stopView = stopLease, stopView
	m.leaseWG.Add(1)
	go m.keepAlive(leaseCtx, lease)
	m.viewWG.Add(2)
	go m.watch(viewCtx, rev)
	go m.heal(viewCtx)
	return m, nil
}

func (m *Membership) startGossip(cfg MembershipConfig) (*memberlist.Memberlist, error) {
	host, port, err := net.SplitHostPort(cfg.GossipBind)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip bind %q: %w", cfg.GossipBind, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip bind %q: %w", cfg.GossipBind, err)
	}
	mc := memberlist.DefaultLocalConfig()
	if cfg.FastFailure {
		// A member that misses a probe's ack (300 ms) and then cannot
		// refute the suspicion within 2 probe intervals (800 ms) is
		// declared failed: a crash is seen in about 1.5 s, and a live
		// process has over a second to answer. (100 ms and 400 ms took
		// CPU-starved workers for dead every minute on a loaded 2-core
		// machine.)
		mc.ProbeInterval = 400 * time.Millisecond
		mc.ProbeTimeout = 300 * time.Millisecond
		mc.SuspicionMult = 2
	}
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = cfg.SecretKey
	}
	if cfg.Gossip != nil {
		cfg.Gossip(mc)
	}
	mc.Name = fmt.Sprintf("%s/%s/%08x", cfg.Self.Role, cfg.Self.ID, rand.Uint32())
	mc.BindAddr, mc.BindPort = host, p
	mc.AdvertiseAddr, mc.AdvertisePort = "", p
	if cfg.GossipAdvertise != "" {
		ah, ap, err := net.SplitHostPort(cfg.GossipAdvertise)
		if err != nil {
			return nil, fmt.Errorf("cluster: gossip advertise %q: %w", cfg.GossipAdvertise, err)
		}
		// memberlist advertises an IP address: a host name (a container's
		// service name, as --advertise gives it) is resolved here, once
		if mc.AdvertiseAddr, err = resolveIP(ah); err != nil {
			return nil, fmt.Errorf("cluster: gossip advertise %q: %w", cfg.GossipAdvertise, err)
		}
		if mc.AdvertisePort, err = strconv.Atoi(ap); err != nil {
			return nil, fmt.Errorf("cluster: gossip advertise %q: %w", cfg.GossipAdvertise, err)
		}
	}
	d := &gossipDelegate{m: m}
	mc.Delegate, mc.Events = d, d
	mc.LogOutput = nil
	mc.Logger = log.New(memberlistLog{m.log}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start gossip: %w", err)
	}
	return ml, nil
}

// resolveIP returns host if it is an IP address, else its first IPv4
// address (or first address).
func resolveIP(host string) (string, error) {
	if net.ParseIP(host) != nil {
		return host, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return "", err
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("no address for %s", host)
	}
	return ips[0].String(), nil
}

// register grants a lease and writes the member record under it.
func (m *Membership) register(ctx context.Context) (clientv3.LeaseID, error) {
	val, err := json.Marshal(m.self)
	if err != nil {
		return 0, fmt.Errorf("cluster: encode member: %w", err)
	}
	lr, err := m.cli.Grant(ctx, m.ttl)
	if err != nil {
		return 0, fmt.Errorf("cluster: grant lease: %w", err)
	}
	if _, err := m.cli.Put(ctx, m.selfKey, string(val), clientv3.WithLease(lr.ID)); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		m.cli.Revoke(rctx, lr.ID)
		cancel()
		return 0, fmt.Errorf("cluster: register %s: %w", m.selfKey, err)
	}
	return lr.ID, nil
}

// joinGossip joins the gossip of the members etcd lists. Every member lists
// the others after writing its own record, so of any two members joining at
// once the later one sees the earlier. It returns the etcd revision of the
// last listing, for the watch to continue from.
func (m *Membership) joinGossip(ctx context.Context, seeds []string) (int64, error) {
	if len(seeds) > 0 {
		if n, err := m.ml.Join(seeds); n == 0 {
			m.log.Warn("gossip seeds unreachable", "seeds", seeds, "err", err)
		}
	}
	var lastErr error
	for attempt := 0; ; attempt++ {
		rev, err := m.resync(ctx)
		if err != nil {
			lastErr = err
		} else {
			addrs, anyAlive := m.gossipPeers()
			if len(addrs) == 0 || anyAlive {
				return rev, nil
			}
			n, err := m.ml.Join(addrs)
			if n > 0 {
				if _, err := m.resync(ctx); err != nil { // pick up nodes that joined meanwhile
					return 0, err
				}
				return rev, nil
			}
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("join (last error: %v): %w: %w", lastErr, ErrGossipJoin, ctx.Err())
		case <-time.After(backoff(attempt)):
		}
	}
}

// gossipPeers returns the gossip addresses of registered members other than
// self that gossip does not have alive, and whether gossip has any other
// registered member alive.
func (m *Membership) gossipPeers() (addrs []string, anyAlive bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, e := range m.members {
		if key == m.selfKey {
			continue
		}
		if n := m.nodes[e.rec.Node]; n != nil && n.state == nodeAlive {
			anyAlive = true
			continue
		}
		if a := e.rec.Addrs[AddrGossip]; a != "" {
			addrs = append(addrs, a)
		}
	}
	slices.Sort(addrs)
	return addrs, anyAlive
}

// keepAlive keeps the lease alive; when it is lost (etcd unreachable for a
// TTL, or the lease expired) it registers again under a new lease, retrying
// with backoff until ctx ends. It owns the lease from Join until Leave.
func (m *Membership) keepAlive(ctx context.Context, lease clientv3.LeaseID) {
	defer m.leaseWG.Done()
	for {
		ch, err := m.cli.KeepAlive(ctx, lease)
		if err == nil {
			for range ch {
			}
		}
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("lease lost", "lease", fmt.Sprintf("%x", lease), "err", err)
		m.emitSelf(EventLeaseLost)
		// etcd out of reach is not the lease gone: a restarted etcd
		// extends every lease it had by its TTL. Keeping the old lease
		// keeps the record, so peers see no member go.
		if m.reviveLease(ctx, lease) {
			m.log.Info("lease kept", "lease", fmt.Sprintf("%x", lease))
			m.emitSelf(EventRegistered)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		old := lease
		for attempt := 0; ; attempt++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff(attempt)):
			}
			rctx, cancel := context.WithTimeout(ctx, time.Duration(m.ttl)*time.Second)
			lease, err = m.register(rctx)
			cancel()
			if err == nil {
				break
			}
			m.log.Debug("register again", "attempt", attempt, "err", err)
		}
		m.mu.Lock()
		m.lease = lease
		m.mu.Unlock()
		// The record now hangs on the new lease; the old one (still alive if
		// etcd restarted and extended it) holds nothing of ours.
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		m.cli.Revoke(rctx, old)
		cancel()
		m.log.Info("registered again", "lease", fmt.Sprintf("%x", lease))
		m.emitSelf(EventRegistered)
	}
}

// reviveLease tries to renew lease once etcd answers again. It returns
// true if the lease is alive again, false if etcd says it has expired (or
// ctx ended, or etcd stayed out of reach for a long while: then a new
// registration is the only way back).
func (m *Membership) reviveLease(ctx context.Context, lease clientv3.LeaseID) bool {
	giveUp := time.Now().Add(time.Minute)
	for attempt := 0; time.Now().Before(giveUp); attempt++ {
		// an attempt lasts well under a TTL, so that a restarted etcd's
		// extension (one TTL) is not missed between attempts
		actx, cancel := context.WithTimeout(ctx, time.Duration(m.ttl)*time.Second/3)
		resp, err := m.cli.KeepAliveOnce(actx, lease)
		cancel()
		switch {
		case err == nil && resp.TTL > 0:
			return true
		case err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound):
			return false
		case ctx.Err() != nil:
			return false
		}
		m.log.Debug("renew lease", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(backoff(attempt), time.Duration(m.ttl)*time.Second/3)):
		}
	}
	return false
}

// watch keeps the etcd side of the view: it lists the members, then
// watches for changes, and lists again after any watch error (compaction,
// lost leader). Deletions found by a listing are reported as EventGone.
func (m *Membership) watch(ctx context.Context, rev int64) {
	defer m.viewWG.Done()
	for attempt := 0; ctx.Err() == nil; {
		if rev == 0 {
			var err error
			if rev, err = m.resync(ctx); err != nil {
				m.log.Debug("list members", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(backoff(attempt)):
				}
				attempt++
				continue
			}
		}
		attempt = 0
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := m.cli.Watch(wctx, m.keys.Members(), clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
		for resp := range wch {
			if err := resp.Err(); err != nil {
				m.log.Debug("member watch ended", "err", err)
				break
			}
			m.mu.Lock()
			for _, ev := range resp.Events {
				switch ev.Type {
				case clientv3.EventTypePut:
					m.applyPutLocked(string(ev.Kv.Key), ev.Kv.Value, ev.Kv.ModRevision)
				case clientv3.EventTypeDelete:
					m.removeLocked(string(ev.Kv.Key))
				}
			}
			m.mu.Unlock()
		}
		cancel()
		rev = 0
	}
}

// resync lists the member keys and brings the view in line with them.
func (m *Membership) resync(ctx context.Context) (int64, error) {
	resp, err := m.cli.Get(ctx, m.keys.Members(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("cluster: list members: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		seen[string(kv.Key)] = true
		m.applyPutLocked(string(kv.Key), kv.Value, kv.ModRevision)
	}
	for key := range m.members {
		if !seen[key] {
			m.removeLocked(key)
		}
	}
	return resp.Header.Revision, nil
}

func (m *Membership) applyPutLocked(key string, val []byte, modRev int64) {
	role, id, ok := m.keys.ParseMember(key)
	if !ok {
		return
	}
	var rec record
	if err := json.Unmarshal(val, &rec); err != nil {
		m.log.Warn("bad member record", "key", key, "err", err)
		return
	}
	rec.Role, rec.ID = role, id
	e := m.members[key]
	if e != nil && modRev <= e.modRev {
		return
	}
	if e != nil && e.rec.Node != rec.Node {
		// A new incarnation under the same role and id.
		m.removeLocked(key)
		e = nil
	}
	if e == nil {
		e = &entry{rec: rec, modRev: modRev}
		m.members[key] = e
		m.refreshLocked(e)
		if !e.live && key != m.selfKey {
			select {
			case m.kick <- struct{}{}:
			default:
			}
		}
		return
	}
	changed := !reflect.DeepEqual(e.rec, rec)
	e.rec, e.modRev = rec, modRev
	if rec.Leaving {
		if n := m.nodes[rec.Node]; n != nil {
			n.state = nodeLeft
		}
		if e.live {
			e.live = false
			m.emitLocked(EventLeft, e.rec.Member)
		}
		return
	}
	if changed && e.live {
		m.emitLocked(EventUpdated, e.rec.Member)
	}
}

func (m *Membership) removeLocked(key string) {
	e := m.members[key]
	if e == nil {
		return
	}
	delete(m.members, key)
	if n := m.nodes[e.rec.Node]; n != nil && n.state != nodeAlive {
		delete(m.nodes, e.rec.Node)
	}
	m.emitLocked(EventGone, e.rec.Member)
}

// refreshLocked recomputes e.live and reports a change.
func (m *Membership) refreshLocked(e *entry) {
	n := m.nodes[e.rec.Node]
	live := n != nil && n.state == nodeAlive
	if live == e.live {
		return
	}
	e.live = live
	switch {
	case live:
		m.emitLocked(EventJoined, e.rec.Member)
	case n != nil && n.state == nodeLeft:
		m.emitLocked(EventLeft, e.rec.Member)
	default:
		m.emitLocked(EventFailed, e.rec.Member)
	}
}

// gossip reports a node's state.
func (m *Membership) gossip(node *memberlist.Node, state nodeState) {
	var meta gossipMeta
	if err := json.Unmarshal(node.Meta, &meta); err != nil {
		m.log.Debug("bad gossip meta", "node", node.Name, "err", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	n := m.nodes[node.Name]
	if n == nil {
		n = &nodeInfo{}
		m.nodes[node.Name] = n
	}
	n.meta = meta
	n.state = state
	if meta.Leaving {
		// Announced by Leave before it leaves gossip and revokes the lease:
		// take the member out of the view now, as left, not failed.
		n.state = nodeLeft
	}
	found := false
	for _, e := range m.members {
		if e.rec.Node == node.Name {
			found = true
			m.refreshLocked(e)
		}
	}
	if !found && n.state != nodeAlive {
		delete(m.nodes, node.Name)
	}
}

// heal joins registered members that gossip does not have alive: members
// that registered after us and have not reached us yet, and members that
// gossip declared dead by mistake (a pause, a partition) while their lease
// held. It runs on every new record and every half TTL.
func (m *Membership) heal(ctx context.Context) {
	defer m.viewWG.Done()
	every := time.Duration(m.ttl) * time.Second / 2
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
		}
		addrs, _ := m.gossipPeers()
		for _, a := range addrs {
			if ctx.Err() != nil {
				return
			}
			if _, err := m.ml.Join([]string{a}); err != nil {
				m.log.Debug("gossip join", "addr", a, "err", err)
			}
		}
	}
}

// Self returns the local member, with Addrs[AddrGossip] filled in.
func (m *Membership) Self() Member {
	return cloneMember(m.self.Member)
}

// Members returns the live members of role ("" for all roles), sorted by
// rank, then id. The local member is included.
func (m *Membership) Members(role Role) []Member { return m.list(role, true) }

// Registered returns the members of role ("" for all) whose lease key
// exists, live or not: gossip's suspicion does not take a member out of
// this list, only the lease's expiry (or a leave) does. Use it where a
// false "failed" would do harm that a few more seconds of waiting would not,
// e.g. refusing a worker's gradient. Same order as Members.
func (m *Membership) Registered(role Role) []Member { return m.list(role, false) }

func (m *Membership) list(role Role, liveOnly bool) []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Member
	for _, e := range m.members {
		if (e.live || !liveOnly) && (role == "" || e.rec.Role == role) {
			out = append(out, cloneMember(e.rec.Member))
		}
	}
	slices.SortFunc(out, func(a, b Member) int {
		if a.Rank != b.Rank {
			return a.Rank - b.Rank
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Subscribe returns a channel of membership events from now on, and a
// function that ends the subscription and closes the channel. Events are
// queued without bound, so a slow reader delays but never loses them and
// never blocks gossip. Subscribe, then read Members(), to miss nothing. The
// channel is also closed by Leave.
func (m *Membership) Subscribe() (<-chan Event, func()) {
	s := newSubscriber()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		s.stop()
		return s.ch, func() {}
	}
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s.ch, func() {
		m.mu.Lock()
		delete(m.subs, s)
		m.mu.Unlock()
		s.stop()
	}
}

// Leave leaves gracefully: it marks the member as leaving in gossip, stops
// the keepalive, leaves gossip (peers get EventLeft), revokes the lease
// (peers get EventGone at once rather than after TTL) and shuts gossip
// down. Subscriptions are closed. It is safe to call more than once; later
// calls return the first call's error.
func (m *Membership) Leave(ctx context.Context) error {
	m.leaveOnce.Do(func() {
		timeout := time.Second
		if d, ok := ctx.Deadline(); ok && time.Until(d) < 2*timeout {
			timeout = max(time.Until(d)/2, 10*time.Millisecond)
		}
		m.metaMu.Lock()
		m.meta.Leaving = true
		m.metaMu.Unlock()
		var errs []error
		if err := m.ml.UpdateNode(timeout); err != nil {
			errs = append(errs, fmt.Errorf("cluster: gossip leaving flag: %w", err))
		}
		// Mark the etcd record as leaving, under the same lease, before
		// anything goes away: peers' watches see it before the deletion.
		if val, err := json.Marshal(record{Member: m.self.Member, Node: m.self.Node, Leaving: true}); err == nil {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			if _, err := m.cli.Put(pctx, m.selfKey, string(val), clientv3.WithLease(m.currentLease())); err != nil {
				errs = append(errs, fmt.Errorf("cluster: mark leaving: %w", err))
			}
			cancel()
		}
		m.stopLease()
		m.leaseWG.Wait()
		m.stopView()
		m.viewWG.Wait()
		if err := m.ml.Leave(timeout); err != nil {
			errs = append(errs, fmt.Errorf("cluster: gossip leave: %w", err))
		}
		if _, err := m.cli.Revoke(ctx, m.currentLease()); err != nil {
			errs = append(errs, fmt.Errorf("cluster: revoke lease: %w", err))
		}
		if err := m.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: gossip shutdown: %w", err))
		}
		m.closeSubs()
		m.leaveErr = errors.Join(errs...)
	})
	return m.leaveErr
}

// crash stops everything without telling anyone, as kill -9 would: the
// lease is left to expire and gossip goes silent.
func (m *Membership) crash() {
	m.leaveOnce.Do(func() {
		m.stopLease()
		m.leaseWG.Wait()
		m.stopView()
		m.viewWG.Wait()
		m.ml.Shutdown()
		m.closeSubs()
	})
}

func (m *Membership) closeSubs() {
	m.mu.Lock()
	m.closed = true
	subs := m.subs
	m.subs = nil
	m.mu.Unlock()
	for s := range subs {
		s.stop()
	}
}

func (m *Membership) currentLease() clientv3.LeaseID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lease
}

func (m *Membership) emitSelf(kind EventKind) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.emitLocked(kind, m.self.Member)
}

func (m *Membership) emitLocked(kind EventKind, mem Member) {
	ev := Event{Kind: kind, Member: cloneMember(mem), At: time.Now()}
	m.log.Debug("membership event", "event", ev.String())
	for s := range m.subs {
		s.push(ev)
	}
}

// gossipDelegate is memberlist's view of a Membership. memberlist calls
// it with its own locks held: it must not call back into memberlist.
type gossipDelegate struct{ m *Membership }

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	d.m.metaMu.Lock()
	defer d.m.metaMu.Unlock()
	b, _ := json.Marshal(d.m.meta)
	if len(b) > limit {
		return nil // Join checked the size; not reached
	}
	return b
}

func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}
func (d *gossipDelegate) NotifyJoin(n *memberlist.Node)              { d.m.gossip(n, nodeAlive) }
func (d *gossipDelegate) NotifyUpdate(n *memberlist.Node)            { d.m.gossip(n, nodeAlive) }
func (d *gossipDelegate) NotifyLeave(n *memberlist.Node)             { d.m.gossip(n, nodeDead) }

// memberlistLog turns memberlist's "[LEVEL] memberlist: ..." lines into
// slog records.
type memberlistLog struct{ log *slog.Logger }

func (w memberlistLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelInfo
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

// subscriber is one Subscribe channel with an unbounded queue in front.
type subscriber struct {
	ch       chan Event
	mu       sync.Mutex
	q        []Event
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newSubscriber() *subscriber {
	s := &subscriber{
		ch:   make(chan Event),
		wake: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.pump()
	return s
}

func (s *subscriber) push(e Event) {
	s.mu.Lock()
	s.q = append(s.q, e)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) pump() {
	defer close(s.done)
	defer close(s.ch)
	for {
		s.mu.Lock()
		if len(s.q) == 0 {
			s.mu.Unlock()
			select {
			case <-s.wake:
				continue
			case <-s.quit:
				return
			}
		}
		e := s.q[0]
		s.q = s.q[1:]
		s.mu.Unlock()
		select {
		case s.ch <- e:
		case <-s.quit:
			return
		}
	}
}

func (s *subscriber) stop() {
	s.stopOnce.Do(func() { close(s.quit) })
	<-s.done
}

// backoff is the wait before retry attempt (0-based): 100 ms doubling to
// 2 s, with ±20% jitter.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 5)
	d = min(d, 2*time.Second)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneMember(m Member) Member {
	m.Addrs = cloneMap(m.Addrs)
	m.Extra = cloneMap(m.Extra)
	return m
}
