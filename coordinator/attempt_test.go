package coordinator

import (
	"errors"
	"testing"
)

// An attempt rolls back once, for the first reason given; errors after it
// are its consequence (errRollback); only its own servers' loss counts.
func TestAttemptRollback(t *testing.T) {
	a, b := newAttempt(), newAttempt()
	if a.gen == b.gen || a.gen == 0 {
		t.Errorf("generations %x and %x; want two different, non-zero", a.gen, b.gen)
	}
	a.setServers([]string{"h:1", "h:2"})
	if !a.serves("h:2") || a.serves("h:3") {
		t.Errorf("serves h:2 %v, h:3 %v; want true, false", a.serves("h:2"), a.serves("h:3"))
	}
	boom := errors.New("pull failed")
	if err := a.orRollback(boom); err != boom {
		t.Errorf("before a rollback: %v; want the error as it is", err)
	}
	announced := 0
	if !a.startRollback("parameter server ps1 lost", func() { announced++ }) {
		t.Fatal("the first rollback was refused")
	}
	if a.startRollback("no progress", func() { announced++ }) {
		t.Error("a second rollback of the same attempt was started")
	}
	if announced != 1 || !a.rollingBack() || a.reason() != "parameter server ps1 lost" {
		t.Errorf("announced %d, rolling back %v, why %q; want 1, true, the first reason", announced, a.rollingBack(), a.reason())
	}
	if err := a.orRollback(boom); !errors.Is(err, errRollback) || !errors.Is(err, boom) {
		t.Errorf("after a rollback: %v; want errRollback wrapping the error", err)
	}
	if b.rollingBack() {
		t.Error("another attempt rolls back too")
	}
}
