package job

import "fmt"

// Mode is a run's update rule: how the parameter servers turn the workers'
// gradients into updates.
type Mode string

const (
	// ModeSync collects one gradient from every active worker for step t,
	// averages them in worker-rank order and applies one optimizer step.
	ModeSync Mode = "sync"
	// ModeAsync applies every gradient on arrival, one optimizer step each.
	ModeAsync Mode = "async"
	// ModeSSP is ModeAsync with bounded staleness: a worker's push for step
	// s is held while s is more than the staleness bound ahead of the
	// slowest active worker.
	ModeSSP Mode = "ssp"
)

// Modes are the update rules, in the order help texts list them.
var Modes = []Mode{ModeSync, ModeAsync, ModeSSP}

// Validate fails on a mode that is none of Modes.
func (m Mode) Validate() error {
	for _, k := range Modes {
		if m == k {
			return nil
		}
	}
	return fmt.Errorf("mode %q: want sync, async or ssp", string(m))
}

// String is the mode's name.
func (m Mode) String() string { return string(m) }

// Set parses a flag's value (flag.Value).
func (m *Mode) Set(s string) error {
	if err := Mode(s).Validate(); err != nil {
		return err
	}
	*m = Mode(s)
	return nil
}
