// Package cluster is the plumbing that the coordinator, parameter servers and
// workers share: an embedded etcd for `tailor local` and tests, the etcd key
// layout of a run with small compare-and-swap helpers, membership (an etcd
// lease per member plus memberlist gossip for fast failure detection), and
// leader election.
//
// Who decides what:
//   - etcd is the source of truth. A member exists while its lease-bound key
//     members/<role>/<id> exists; every write that must not be lost or done
//     twice is an etcd Txn with a compare (see keys.go and docs/etcd-keys.md).
//   - Gossip (hashicorp/memberlist) only makes failure detection faster: it
//     can take a member out of the live view within about a second, before
//     its lease expires, but it never adds a member that etcd does not have.
package cluster
