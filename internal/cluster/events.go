package cluster

import (
	"fmt"
	"strconv"
	"sync"
	"time"
)

// This file holds the membership events and their delivery: Subscribe,
// and the unbounded queue in front of each subscriber's channel.

// EventKind says what happened to a member.
type EventKind int

// The membership events. Joined/Failed/Left/Updated describe the live view
// (Members); Gone is the etcd confirmation; LeaseLost/Registered are about
// the local member's own registration.
const (
	// EventJoined: the member became live (its lease key exists and gossip
	// has it alive). Also sent when a member that gossip had reported dead
	// turns out alive while its lease held.
	EventJoined EventKind = iota + 1
	// EventUpdated: a live member's etcd record changed.
	EventUpdated
	// EventFailed: gossip reports the member dead (not a graceful leave).
	// It is out of the live view now; its lease has not expired yet. Fast
	// (about a second with FastFailure) but can be a false positive under
	// load: EventJoined follows if the member refutes it.
	EventFailed
	// EventLeft: the member announced a graceful leave in gossip.
	EventLeft
	// EventGone: the member's key was deleted: its lease expired or was
	// revoked. Final for this incarnation; reclaim its work on this event.
	EventGone
	// EventLeaseLost: the local member lost its lease (etcd unreachable
	// for a TTL, or the lease expired). It keeps retrying to register.
	EventLeaseLost
	// EventRegistered: the local member registered again under a new lease
	// after EventLeaseLost.
	EventRegistered
)

var eventNames = [...]string{"", "joined", "updated", "failed", "left", "gone", "lease-lost", "registered"}

func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is a change of membership. Events are edge-triggered hints, in
// order per Membership; the level is Members().
type Event struct {
	Kind   EventKind
	Member Member
	At     time.Time
	// Replaced: an EventGone because a new process of the same role and
	// id registered in the member's place (before its lease expired).
	Replaced bool
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s/%s", e.Kind, e.Member.Role, e.Member.ID)
}

// Subscribe returns a channel of membership events from now on, and a
// function that ends the subscription and closes the channel. Events are
// queued without bound, so a slow reader delays but never loses them and
// never blocks gossip. Subscribe, then read Members(), to miss nothing. The
// channel is also closed by Leave.
func (m *Membership) Subscribe() (<-chan Event, func()) {
	s := newSubscriber()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		s.stop()
		return s.ch, func() {}
	}
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s.ch, func() {
		m.mu.Lock()
		delete(m.subs, s)
		m.mu.Unlock()
		s.stop()
	}
}

func (m *Membership) closeSubs() {
	m.mu.Lock()
	m.closed = true
	subs := m.subs
	m.subs = nil
	m.mu.Unlock()
	for s := range subs {
		s.stop()
	}
}

func (m *Membership) emitSelf(kind EventKind) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.emitLocked(kind, m.self.Member)
}

func (m *Membership) emitLocked(kind EventKind, mem Member) {
	ev := Event{Kind: kind, Member: cloneMember(mem), At: time.Now(), Replaced: kind == EventGone && m.replaced}
	m.log.Debug("membership event", "event", ev.String())
	for s := range m.subs {
		s.push(ev)
	}
}

// subscriber is one Subscribe channel with an unbounded queue in front.
type subscriber struct {
	ch       chan Event
	mu       sync.Mutex
	q        []Event
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newSubscriber() *subscriber {
	s := &subscriber{
		ch:   make(chan Event),
		wake: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.pump()
	return s
}

func (s *subscriber) push(e Event) {
	s.mu.Lock()
	s.q = append(s.q, e)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) pump() {
	defer close(s.done)
	defer close(s.ch)
	for {
		s.mu.Lock()
		if len(s.q) == 0 {
			s.mu.Unlock()
			select {
			case <-s.wake:
				continue
			case <-s.quit:
				return
			}
		}
		e := s.q[0]
		s.q = s.q[1:]
		s.mu.Unlock()
		select {
		case s.ch <- e:
		case <-s.quit:
			return
		}
	}
}

func (s *subscriber) stop() {
	s.stopOnce.Do(func() { close(s.quit) })
	<-s.done
}
