package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/internal/retry"
)

// This file holds the local member's registration: the member record
// under its lease, the keepalive, and registering again once the lease is
// lost.

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

// keepAlive keeps the lease alive; when it is lost (etcd unreachable for a
// TTL, or the lease expired) it registers again under a new lease, retrying
// with backoff until ctx ends. It owns the lease from Join until Leave.
// An outage is logged when the lease is lost, at its first failed attempt
// (with etcd's error) and when it is over, not at every attempt.
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
		fails := &retry.Streak{Log: m.log, What: "keeping the registration"}
		// etcd out of reach is not the lease gone: a restarted etcd
		// extends every lease it had by its TTL. Keeping the old lease
		// keeps the record, so peers see no member go.
		if m.reviveLease(ctx, lease, fails) {
			fails.OK()
			m.log.Info("lease kept", "lease", fmt.Sprintf("%x", lease))
			m.emitSelf(EventRegistered)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		old := lease
		b := newBackoff()
		for {
			if !b.Wait(ctx) {
				return
			}
			rctx, cancel := context.WithTimeout(ctx, time.Duration(m.ttl)*time.Second)
			lease, err = m.register(rctx)
			cancel()
			if err == nil {
				break
			}
			fails.Fail(err)
		}
		fails.OK()
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

// reviveLease tries to renew lease once etcd answers again, counting each
// failed attempt in fails. It returns true if the lease is alive again,
// false if etcd says it has expired (or ctx ended, or etcd stayed out of
// reach for a long while: then a new registration is the only way back).
func (m *Membership) reviveLease(ctx context.Context, lease clientv3.LeaseID, fails *retry.Streak) bool {
	// an attempt, and a wait between attempts, last well under a TTL, so
	// that a restarted etcd's extension (one TTL) is not missed
	third := time.Duration(m.ttl) * time.Second / 3
	giveUp := time.Now().Add(time.Minute)
	for b := newBackoff(); time.Now().Before(giveUp); {
		actx, cancel := context.WithTimeout(ctx, third)
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
		fails.Fail(err, "lease", fmt.Sprintf("%x", lease))
		if !retry.Sleep(ctx, min(b.Next(), third)) {
			return false
		}
	}
	return false
}

func (m *Membership) currentLease() clientv3.LeaseID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lease
}

// newBackoff is the backoff of this package's retry loops: 100 ms doubling
// to 2 s, each wait within ±20% of that. (retry.Backoff's jitter only adds:
// a base and cap of 0.8 times those with up to 50% added give 0.8 to 1.2
// times 100 ms, 200 ms, ... 2 s.)
func newBackoff() retry.Backoff {
	return retry.Backoff{Base: 80 * time.Millisecond, Max: 1600 * time.Millisecond, Jitter: 0.5}
}
