package coordinator

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/tailorml/tailor/input"
	"github.com/tailorml/tailor/shard"
)

// A Unit is the smallest piece of an epoch handed to a worker. There are two
// plans (Shuffle of the job spec):
//
//   - "units": a unit is a contiguous range of records of one shard, the same
//     in every epoch (Units). Within a unit, records are visited in an order
//     that is a pure function of (seed, epoch, unit), and units are handed
//     out in an order drawn per epoch. A worker reads only its units' shards.
//   - "global": the epoch's units are consecutive batch-sized pieces of one
//     permutation of the whole split, the one the single-process trainer
//     draws (input.Order), handed out in that order (GlobalUnits). A sync
//     step's participants take consecutive pieces, so the step's global
//     batch is exactly the one process's batch at the same global batch
//     size. Records come from any shard: a worker caches the whole split.
//
// Either way the visiting order is a pure function of (seed, epoch, unit), so
// a unit that moves to another worker half-way continues exactly where it
// stopped.
type Unit struct {
	ID      int    `json:"id"`
	Shard   string `json:"shard"`    // shard object name
	FirstID uint64 `json:"first_id"` // record ID of the shard's first record
	Offset  int    `json:"offset"`   // first record of the unit, within the shard
	Len     int    `json:"len"`      // records in the unit
	// IDs are a global unit's record IDs in visiting order (nil for a
	// shard range).
	IDs []uint64 `json:"-"`
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

// GlobalUnits cuts the epoch's permutation of a split's records (the one
// input.Order draws for the single-process trainer, over the split's records
// in ID order) into units of size records, in order.
func GlobalUnits(m *shard.Manifest, split string, seed uint64, epoch, size int) ([]Unit, error) {
	if size < 1 {
		return nil, fmt.Errorf("unit size %d: want at least 1", size)
	}
	sp, err := m.Split(split)
	if err != nil {
		return nil, err
	}
	if len(sp.Shards) == 0 {
		return nil, fmt.Errorf("split %s has no shards", split)
	}
	first := sp.Shards[0].FirstID
	order := input.Order(int(sp.Records), seed, epoch)
	var us []Unit
	for off := 0; off < len(order); off += size {
		u := Unit{ID: len(us), Len: min(size, len(order)-off)}
		for _, i := range order[off : off+u.Len] {
			u.IDs = append(u.IDs, first+uint64(i))
		}
		us = append(us, u)
	}
	return us, nil
}

// global reports whether the unit is a piece of the split's permutation.
func (u Unit) global() bool { return u.IDs != nil }

// RecordOrder is the visiting order of a unit's records in an epoch: indices
// 0..Len-1 into the unit. A global unit is visited as it is.
func (u Unit) RecordOrder(seed uint64, epoch int) []int {
	if u.global() {
		o := make([]int, u.Len)
		for i := range o {
			o[i] = i
		}
		return o
	}
	return rand.New(rand.NewPCG(seed^0x0de5, uint64(epoch)<<32|uint64(u.ID))).Perm(u.Len)
}

// RecordID is the dataset-wide ID of the unit's i-th record (in shard order,
// or for a global unit in visiting order).
func (u Unit) RecordID(i int) uint64 {
	if u.global() {
		return u.IDs[i]
	}
	return u.FirstID + uint64(u.Offset+i)
}

// EpochOrder is the order in which an epoch hands out units of shard ranges.
func EpochOrder(n int, seed uint64, epoch int) []int {
	return rand.New(rand.NewPCG(seed, uint64(epoch)+0xe0c)).Perm(n)
}

// handOrder is the order in which an epoch hands out units: global units in
// their own order (they are already shuffled), shard ranges by EpochOrder.
func handOrder(units []Unit, seed uint64, epoch int) []int {
	if len(units) > 0 && units[0].global() {
		o := make([]int, len(units))
		for i := range o {
			o[i] = i
		}
		return o
	}
	return EpochOrder(len(units), seed, epoch)
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
	return &Ledger{Epoch: epoch, Units: units, State: make([]UnitState, len(units)), order: handOrder(units, seed, epoch)}
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
