package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file holds the Member, MembershipConfig and the Membership's life:
// Join, the live view's readers (Members, Registered) and Leave. The lease
// is kept in lease.go, the etcd side of the view in view.go, the gossip side
// in gossip.go; events and subscriptions are in events.go.

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
	// KeyFile, if set, holds the gossip keys instead (ReadKeyFile: one hex
	// key a line, the first the one gossip is sent with, every one
	// accepted), and is read again every KeyCheck while the member runs:
	// new keys are installed, the first becomes the one sent with, and a
	// key gone from the file is still accepted for KeyGrace. So a key
	// is rotated without a restart: add the new key as a second line on
	// every member, then move it first, then drop the old one.
	KeyFile string
	// KeyCheck is how often KeyFile is read; default DefaultKeyCheck.
	KeyCheck time.Duration
	// KeyGrace is how long a key dropped from KeyFile is still accepted;
	// default DefaultKeyGrace.
	KeyGrace time.Duration
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
	ring    *memberlist.Keyring // the gossip keys; nil without encryption

	metaMu sync.Mutex
	meta   gossipMeta

	mu      sync.Mutex
	members map[string]*entry    // by etcd key
	nodes   map[string]*nodeInfo // by memberlist node name
	subs    map[*subscriber]struct{}
	lease   clientv3.LeaseID
	closed  bool

	kick chan struct{} // wakes the gossip healer
	// replaced is set while a member's record is removed because a new
	// incarnation took its key (Event.Replaced)
	replaced bool

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
	if cfg.KeyFile != "" {
		check, grace := cfg.KeyCheck, cfg.KeyGrace
		if check <= 0 {
			check = DefaultKeyCheck
		}
		if grace <= 0 {
			grace = DefaultKeyGrace
		}
		m.viewWG.Add(1)
		go m.watchKeys(viewCtx, m.ring, cfg.KeyFile, check, grace)
	}
	return m, nil
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
