package coordinator

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/tailorml/tailor/shard"
)

// A Unit is the smallest piece of an epoch handed to a worker: a contiguous
// range of records of one shard. Within a unit, records are visited in an
// order that is a pure function of (seed, epoch, unit), so a unit that moves
// to another worker half-way continues exactly where it stopped.
type Unit struct {
	ID      int    `json:"id"`
	Shard   string `json:"shard"`    // shard object name
	FirstID uint64 `json:"first_id"` // record ID of the shard's first record
	Offset  int    `json:"offset"`   // first record of the unit, within the shard
	Len     int    `json:"len"`      // records in the unit
}

// Units cuts a split's shards into units of at most size records. Unit IDs
// follow shard order and are stable for a manifest and size.
func Units(m *shard.Manifest, split string, size int) ([]Unit, error) {
	if size < 1 {
		return nil, fmt.Errorf("unit size %d: want at least 1", size)
	}
	sp, err := m.Split(split)
	if err != nil {
		return nil, err
	}
	var us []Unit
	for _, sh := range sp.Shards {
		for off := 0; off < int(sh.Records); off += size {
			us = append(us, Unit{ID: len(us), Shard: sh.Name, FirstID: sh.FirstID, Offset: off, Len: min(size, int(sh.Records)-off)})
		}
	}
	return us, nil
}

// RecordOrder is the visiting order of a unit's records in an epoch: indices
// 0..Len-1 into the unit.
func (u Unit) RecordOrder(seed uint64, epoch int) []int {
	return rand.New(rand.NewPCG(seed^0x0de5, uint64(epoch)<<32|uint64(u.ID))).Perm(u.Len)
}

// RecordID is the dataset-wide ID of the unit's i-th record (in shard order).
func (u Unit) RecordID(i int) uint64 { return u.FirstID + uint64(u.Offset+i) }

// EpochOrder is the order in which an epoch hands out units.
func EpochOrder(n int, seed uint64, epoch int) []int {
	return rand.New(rand.NewPCG(seed, uint64(epoch)+0xe0c)).Perm(n)
}

// UnitState is the ledger's view of one unit in an epoch.
type UnitState struct {
	Owner    string `json:"owner,omitempty"` // worker holding it; empty when free
	Consumed int    `json:"consumed"`        // records applied, in RecordOrder
}

// Ledger tracks one epoch's units: which worker holds each, and how many of
// its records (in visiting order) have been applied by the parameter servers.
// A record counts as consumed only when the step its gradient was part of has
// been applied; a dead worker's units go back to the pool at their consumed
// position, so every record is applied exactly once per epoch.
//
// The ledger is plain state: the coordinator persists it in etcd and is the
// only writer.
type Ledger struct {
	Epoch int         `json:"epoch"`
	Units []Unit      `json:"-"`
	State []UnitState `json:"state"`
	order []int       // hand-out order
	next  int         // position in order of the next never-assigned unit
	free  []int       // released units with records left, oldest first
}

// Errors of Ledger operations.
var (
	ErrNotOwner   = errors.New("coordinator: worker does not hold the unit")
	ErrBadCursor  = errors.New("coordinator: progress out of range")
	ErrEpochEnded = errors.New("coordinator: no units left")
)

// NewLedger starts an epoch over units.
func NewLedger(units []Unit, seed uint64, epoch int) *Ledger {
	return &Ledger{Epoch: epoch, Units: units, State: make([]UnitState, len(units)), order: EpochOrder(len(units), seed, epoch)}
}

// Assign gives worker the next unit with records left: released units first,
// then never-assigned ones in epoch order. It returns the unit and the
// position in its visiting order to start from.
func (l *Ledger) Assign(worker string) (Unit, int, error) {
	for len(l.free) > 0 {
		u := l.free[0]
		l.free = l.free[1:]
		if l.State[u].Owner == "" && l.State[u].Consumed < l.Units[u].Len {
			l.State[u].Owner = worker
			return l.Units[u], l.State[u].Consumed, nil
		}
	}
	for l.next < len(l.order) {
		u := l.order[l.next]
		l.next++
		if l.State[u].Owner == "" && l.State[u].Consumed < l.Units[u].Len {
			l.State[u].Owner = worker
			return l.Units[u], l.State[u].Consumed, nil
		}
	}
	return Unit{}, 0, ErrEpochEnded
}

// Progress records that the records of unit u up to position upTo (exclusive,
// in visiting order) have been applied. Only the owner may report, and only
// forward. When the unit is complete the worker no longer holds it.
func (l *Ledger) Progress(worker string, u, upTo int) error {
	if u < 0 || u >= len(l.Units) {
		return fmt.Errorf("%w: unit %d of %d", ErrBadCursor, u, len(l.Units))
	}
	st := &l.State[u]
	if st.Owner != worker {
		return fmt.Errorf("%w: unit %d is held by %q, not %q", ErrNotOwner, u, st.Owner, worker)
	}
	if upTo < st.Consumed || upTo > l.Units[u].Len {
		return fmt.Errorf("%w: unit %d at %d, reported %d of %d", ErrBadCursor, u, st.Consumed, upTo, l.Units[u].Len)
	}
	st.Consumed = upTo
	if upTo == l.Units[u].Len {
		st.Owner = ""
	}
	return nil
}

// Release returns every unit worker holds to the pool, at its consumed
// position (the worker died or left). It returns the units released.
func (l *Ledger) Release(worker string) []int {
	var rel []int
	for u := range l.State {
		if l.State[u].Owner == worker {
			l.State[u].Owner = ""
			rel = append(rel, u)
		}
	}
	sort.Ints(rel)
	l.free = append(l.free, rel...)
	return rel
}

// Held returns the units a worker holds.
func (l *Ledger) Held(worker string) []int {
	var h []int
	for u, st := range l.State {
		if st.Owner == worker {
			h = append(h, u)
		}
	}
	return h
}

// Remaining is the number of records not yet consumed.
func (l *Ledger) Remaining() int {
	r := 0
	for u, st := range l.State {
		r += l.Units[u].Len - st.Consumed
	}
	return r
}

// Done reports whether every record of the epoch has been consumed.
func (l *Ledger) Done() bool { return l.Remaining() == 0 }

// LedgerState is a ledger's position, as a checkpoint holds it.
type LedgerState struct {
	Epoch int         `json:"epoch"`
	State []UnitState `json:"state"`
	Next  int         `json:"next"` // position in the hand-out order of the next never-assigned unit
	Free  []int       `json:"free,omitempty"`
}

// Export returns the ledger's position.
func (l *Ledger) Export() LedgerState {
	return LedgerState{Epoch: l.Epoch, State: append([]UnitState(nil), l.State...), Next: l.next, Free: append([]int(nil), l.free...)}
}

// RestoreLedger rebuilds a ledger of units at a position Export returned.
func RestoreLedger(units []Unit, seed uint64, st LedgerState) (*Ledger, error) {
	if len(st.State) != len(units) || st.Next < 0 || st.Next > len(units) || st.Epoch < 0 {
		return nil, fmt.Errorf("ledger of %d units, next %d, epoch %d: does not fit %d units", len(st.State), st.Next, st.Epoch, len(units))
	}
	for u, s := range st.State {
		if s.Consumed < 0 || s.Consumed > units[u].Len {
			return nil, fmt.Errorf("ledger: unit %d consumed %d of %d", u, s.Consumed, units[u].Len)
		}
	}
	for _, u := range st.Free {
		if u < 0 || u >= len(units) {
			return nil, fmt.Errorf("ledger: free unit %d of %d", u, len(units))
		}
	}
	l := NewLedger(units, seed, st.Epoch)
	copy(l.State, st.State)
	l.next, l.free = st.Next, append([]int(nil), st.Free...)
	return l, nil
}
