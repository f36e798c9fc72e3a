package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// This file holds the gossip side of membership: starting memberlist,
// joining the members etcd lists, turning memberlist's notifications into
// node states, and healing gossip with the members etcd still has.

// gossipMeta is the memberlist node meta (at most memberlist.MetaMaxSize
// bytes). The gossip address is the node's own address and is not repeated.
type gossipMeta struct {
	Member
	// Leaving is set just before a graceful leave, so that peers can tell a
	// leave from a failure (memberlist reports both as NotifyLeave).
	Leaving bool `json:"leaving,omitempty"`
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
	// lastAck is when this process last had an answer to a gossip probe
	// of the node, rtt how long that probe took (zero: none yet)
	lastAck time.Time
	rtt     time.Duration
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
	keys := [][]byte{cfg.SecretKey}
	if len(cfg.SecretKey) == 0 {
		keys = nil
	}
	if cfg.KeyFile != "" {
		if keys, err = ReadKeyFile(cfg.KeyFile); err != nil {
			return nil, err
		}
	}
	if m.ring, err = keyring(keys); err != nil {
		return nil, fmt.Errorf("cluster: gossip keys: %w", err)
	}
	mc.Keyring = m.ring
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
	mc.Delegate, mc.Events, mc.Ping = d, d, d
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
	for b := newBackoff(); ; {
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
		if !b.Wait(ctx) {
			return 0, fmt.Errorf("join (last error: %v): %w: %w", lastErr, ErrGossipJoin, ctx.Err())
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

// acked notes an answer to this process's gossip probe of node.
func (m *Membership) acked(node string, rtt time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[node]; n != nil {
		n.lastAck, n.rtt = time.Now(), rtt
	}
}

// Contact is when this process last heard from a registered member over
// gossip: the answer to its last probe of the member's node.
type Contact struct {
	Role Role
	ID   string
	Live bool          // in the live view (Members)
	At   time.Time     // zero: no probe answered yet
	RTT  time.Duration // of that probe
}

// Contacts returns the gossip contact of every registered member but this
// process.
func (m *Membership) Contacts() []Contact {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Contact
	for key, e := range m.members {
		if key == m.selfKey {
			continue
		}
		c := Contact{Role: e.rec.Role, ID: e.rec.ID, Live: e.live}
		if n := m.nodes[e.rec.Node]; n != nil {
			c.At, c.RTT = n.lastAck, n.rtt
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Contact) int { return strings.Compare(string(a.Role)+"/"+a.ID, string(b.Role)+"/"+b.ID) })
	return out
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
func (d *gossipDelegate) AckPayload() []byte                         { return nil }
func (d *gossipDelegate) NotifyPingComplete(n *memberlist.Node, rtt time.Duration, _ []byte) {
	d.m.acked(n.Name, rtt)
}
func (d *gossipDelegate) NotifyJoin(n *memberlist.Node)   { d.m.gossip(n, nodeAlive) }
func (d *gossipDelegate) NotifyUpdate(n *memberlist.Node) { d.m.gossip(n, nodeAlive) }
func (d *gossipDelegate) NotifyLeave(n *memberlist.Node)  { d.m.gossip(n, nodeDead) }

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
