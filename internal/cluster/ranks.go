package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// WaitRanks waits until members of role with ranks 0..n-1 are all live and
// publish an address under addrKey, and returns those addresses in rank
// order (e.g. the gRPC addresses of the run's n parameter servers). It
// looks again on every membership event of role, until ctx ends or the
// membership leaves.
func WaitRanks(ctx context.Context, m *Membership, role Role, n int, addrKey string) ([]string, error) {
	events, stop := m.Subscribe() // before reading Members, to miss nothing
	defer stop()
	for {
		addrs := RankAddrs(m, role, n, addrKey)
		have := n - countEmpty(addrs)
		if have == n {
			return addrs, nil
		}
		if err := nextEvent(ctx, events, role); err != nil {
			return nil, fmt.Errorf("waiting for %d %s members (%d live): %w", n, role, have, err)
		}
	}
}

// errLeft ends a wait on membership events: the membership left, and the
// view will not change again.
var errLeft = errors.New("cluster: the membership has left")

// nextEvent waits for an event of role on events, or for ctx to end
// (ctx.Err()) or events to close (errLeft).
func nextEvent(ctx context.Context, events <-chan Event, role Role) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				return errLeft
			}
			if ev.Member.Role == role {
				return nil
			}
		}
	}
}

// RankAddrs returns the addresses under addrKey of the live members of
// role with ranks 0..n-1, in rank order; a rank with no live member (or
// none publishing addrKey) is "".
func RankAddrs(m *Membership, role Role, n int, addrKey string) []string {
	addrs := make([]string, n)
	for _, p := range m.Members(role) {
		if p.Rank >= 0 && p.Rank < n && addrs[p.Rank] == "" && p.Addrs[addrKey] != "" {
			addrs[p.Rank] = p.Addrs[addrKey]
		}
	}
	return addrs
}

// FollowRanks keeps addrs current: it calls set with the addresses of
// ranks 0..n-1 of role (as RankAddrs, a rank that has no live member keeping
// its last address) whenever membership changes them, until ctx ends. It
// reads the membership at once, then on every event of role, and every
// recheck as a safety net (0: every 5 s). set is called from FollowRanks's
// goroutine only, never with an empty address; a caller runs it as
//
//	go cluster.FollowRanks(ctx, mem, cluster.RoleParamServer, n, "grpc", current, set, 0)
func FollowRanks(ctx context.Context, m *Membership, role Role, n int, addrKey string, current []string, set func([]string), recheck time.Duration) {
	if recheck <= 0 {
		recheck = 5 * time.Second
	}
	events, stop := m.Subscribe()
	defer stop()
	have := slices.Clone(current)
	check := func() {
		next := slices.Clone(have)
		for i, a := range RankAddrs(m, role, n, addrKey) {
			if a != "" {
				next[i] = a
			}
		}
		if !slices.Equal(next, have) && !slices.Contains(next, "") {
			have = next
			set(slices.Clone(next))
		}
	}
	t := time.NewTicker(recheck)
	defer t.Stop()
	check()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return // the membership left
			}
			if ev.Member.Role != role {
				continue
			}
		case <-t.C:
		}
		check()
	}
}

func countEmpty(addrs []string) int {
	n := 0
	for _, a := range addrs {
		if a == "" {
			n++
		}
	}
	return n
}
