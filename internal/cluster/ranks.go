package cluster

import (
	"context"
	"fmt"
	"time"
)

// WaitRanks waits until members of role with ranks 0..n-1 are all live and
// publish an address under addrKey, and returns those addresses in rank
// order (e.g. the gRPC addresses of the run's n parameter servers).
func WaitRanks(ctx context.Context, m *Membership, role Role, n int, addrKey string) ([]string, error) {
	for {
		addrs := make([]string, n)
		have := 0
		for _, p := range m.Members(role) {
			if p.Rank >= 0 && p.Rank < n && addrs[p.Rank] == "" && p.Addrs[addrKey] != "" {
				addrs[p.Rank] = p.Addrs[addrKey]
				have++
			}
		}
		if have == n {
			return addrs, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %d %s members (%d live): %w", n, role, have, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
