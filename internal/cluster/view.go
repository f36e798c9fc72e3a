package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/retry"
)

// This file holds the etcd side of the live view: listing and watching
// the member keys, and turning their changes (with gossip's node states)
// into events.

// watch keeps the etcd side of the view: it lists the members, then
// watches for changes, and lists again after any watch error (compaction,
// lost leader). Deletions found by a listing are reported as EventGone.
// A run of failed listings is logged at its first failure and its end.
func (m *Membership) watch(ctx context.Context, rev int64) {
	defer m.viewWG.Done()
	b := newBackoff()
	fails := &retry.Streak{Log: m.log, What: "listing the members"}
	for ctx.Err() == nil {
		if rev == 0 {
			var err error
			if rev, err = m.resync(ctx); err != nil {
				if ctx.Err() == nil {
					fails.Fail(err)
				}
				b.Wait(ctx)
				continue
			}
			fails.OK()
		}
		b.Reset()
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
		m.replaced = true
		m.removeLocked(key)
		m.replaced = false
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
