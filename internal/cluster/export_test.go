package cluster

// Crash stops m as kill -9 would: no lease revoke, no gossip leave.
func (m *Membership) Crash() { m.crash() }

// GossipKeys are m's gossip keys, the primary first.
func (m *Membership) GossipKeys() [][]byte { return m.ring.GetKeys() }
