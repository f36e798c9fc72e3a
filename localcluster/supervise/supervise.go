// Package supervise runs a set of child processes as one unit: it prefixes
// their output with their names, starts a child that fails again after a
// backoff (up to a limit, as systemd's Restart=on-failure does), notices
// when one is down for good, and stops them all — SIGTERM, then SIGKILL
// after a grace period — when its context ends, so nothing is left running.
// `tailor local` runs its cluster with it.
package supervise

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/tailorml/tailor/internal/retry"
)

// Spec is one child process.
type Spec struct {
	Name string   // shown as the prefix of its output lines
	Path string   // executable
	Args []string // without the program name
	Env  []string // added to the parent's environment
	Dir  string
	// Optional children may fail for good (exit with an error and not be
	// restarted, or reach their restart limit) without ending Wait: the
	// group goes on without them. A required child's failure ends it.
	// Any child may exit cleanly: its work is done.
	Optional bool
	// Restart starts the child again, as it was (same path, arguments,
	// environment), when it exits with an error: a non-zero status, a
	// signal, or a failed start. A clean exit is never restarted.
	Restart bool
	// Policy is when and how often Restart starts it again; its zero
	// fields take DefaultRestartPolicy's values.
	Policy RestartPolicy
	// Log, if set, gets every output line of every incarnation as it is
	// (no prefix), and the group's own lines about the child (its exits
	// and restarts) with the time and "tailor local:" before them: the
	// child's log file. The group writes it under its lock.
	Log io.Writer
}

// RestartPolicy is how a child with Spec.Restart is started again, after
// systemd's RestartSec (with a growing delay) and
// StartLimitBurst/StartLimitIntervalSec.
type RestartPolicy struct {
	// Delay is the wait before the first restart; each further restart
	// waits twice the one before, up to MaxDelay.
	Delay, MaxDelay time.Duration
	// ResetAfter: an incarnation that ran at least this long starts the
	// next wait from Delay again.
	ResetAfter time.Duration
	// Limit is the most restarts within any Window; a child that fails
	// once more is down for good.
	Limit  int
	Window time.Duration
}

// DefaultRestartPolicy returns the policy of a child whose Spec.Policy
// is zero: 200 ms doubling to 5 s, reset after 30 s of running, at most
// 5 restarts in 10 minutes.
func DefaultRestartPolicy() RestartPolicy {
	return RestartPolicy{Delay: 200 * time.Millisecond, MaxDelay: 5 * time.Second, ResetAfter: 30 * time.Second, Limit: 5, Window: 10 * time.Minute}
}

// withDefaults fills p's zero (or negative) fields from
// DefaultRestartPolicy.
func (p RestartPolicy) withDefaults() RestartPolicy {
	d := DefaultRestartPolicy()
	if p.Delay <= 0 {
		p.Delay = d.Delay
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = max(d.MaxDelay, p.Delay)
	}
	if p.ResetAfter <= 0 {
		p.ResetAfter = d.ResetAfter
	}
	if p.Limit <= 0 {
		p.Limit = d.Limit
	}
	if p.Window <= 0 {
		p.Window = d.Window
	}
	return p
}

// Exit is a child's end: an exit after which it is not started again.
type Exit struct {
	Name string
	// Err is nil for exit status 0; with a restart policy whose limit was
	// reached it wraps ErrRestartLimit and the last exit's error.
	Err error
}

var (
	// ErrChildFailed reports a required child's failure.
	ErrChildFailed = errors.New("supervise: a required process exited")
	// ErrRestartLimit reports a child that failed again after as many
	// restarts as its policy allows within its window.
	ErrRestartLimit = errors.New("supervise: restart limit reached")
	// ErrStopped reports a Start after Stop began.
	ErrStopped = errors.New("supervise: the group is stopping")
)

// Group is a set of running children.
type Group struct {
	out     io.Writer // the children's lines, prefixed; nil: none
	notices io.Writer // the group's own lines, prefixed (default out)
	grace   time.Duration
	// life ends when Stop begins: pending restarts are cancelled.
	life     context.Context
	endLife  context.CancelFunc
	mu       sync.Mutex // guards out writes and the fields below
	stopping bool
	procs    map[string]*exec.Cmd // the running incarnation of each child
	specs    map[string]Spec
	restarts map[string]int
	exits    chan Exit
	wg       sync.WaitGroup // one per child, until its last incarnation is gone
}

// New makes a group writing the children's output, and its own lines
// about them (exits, restarts), to out, each line prefixed with the
// child's name; a nil out gets nothing (each Spec.Log still gets its
// child's). Children get grace to stop after SIGTERM before SIGKILL.
func New(out io.Writer, grace time.Duration) *Group {
	life, end := context.WithCancel(context.Background())
	return &Group{out: out, notices: out, grace: grace, life: life, endLife: end, procs: map[string]*exec.Cmd{}, specs: map[string]Spec{},
		restarts: map[string]int{}, exits: make(chan Exit, 64)}
}

// SetNotices sends the group's own lines about its children (exits and
// restarts, prefixed with the child's name) to w instead of New's out
// (nil: nowhere but the children's Spec.Log). Call it before Start.
func (g *Group) SetNotices(w io.Writer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.notices = w
}

// incarnation is one run of a child: its process and the reader of its
// output.
type incarnation struct {
	cmd     *exec.Cmd
	r       *os.File
	started time.Time
	done    chan struct{} // closed when the output is read to its end
}

// Start starts a child in its own process group and supervises it until
// it is down for good (see Spec.Restart). It fails after Stop began.
func (g *Group) Start(s Spec) error {
	if s.Restart {
		s.Policy = s.Policy.withDefaults()
	}
	inc, err := g.spawn(s, true)
	if err != nil {
		return err
	}
	go g.supervise(s, inc)
	return nil
}

// spawn starts one incarnation of s, unless the group is stopping; the
// first one counts the child in the group's wait group.
func (g *Group) spawn(s Spec, first bool) (*incarnation, error) {
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	// the output goes through a pipe of our own rather than StdoutPipe, so
	// the child's exit is seen even while something it left holds the pipe
	cmd.Stdout, cmd.Stderr = w, w
	// starting under the lock: Stop either sees the process in procs, or
	// this sees stopping and starts nothing
	g.mu.Lock()
	if g.stopping {
		g.mu.Unlock()
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %s: %w", s.Name, ErrStopped)
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		g.mu.Unlock()
		r.Close()
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	if first {
		g.wg.Add(1) // Done when the child is down for good
	} else {
		g.restarts[s.Name]++ // counted as the new incarnation shows (Pid)
	}
	g.procs[s.Name] = cmd
	g.specs[s.Name] = s
	g.mu.Unlock()
	inc := &incarnation{cmd: cmd, r: r, started: time.Now(), done: make(chan struct{})}
	go g.copyOutput(s, inc)
	return inc, nil
}

// copyOutput writes the incarnation's output lines to the group's out,
// prefixed with the child's name, and to its Spec.Log.
func (g *Group) copyOutput(s Spec, inc *incarnation) {
	defer close(inc.done)
	sc := bufio.NewScanner(inc.r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		g.mu.Lock()
		if g.out != nil {
			fmt.Fprintf(g.out, "%-12s| %s\n", s.Name, sc.Text())
		}
		if s.Log != nil {
			fmt.Fprintf(s.Log, "%s\n", sc.Text())
		}
		g.mu.Unlock()
	}
	// a line too long to show: drop the rest rather than block the child
	_, _ = io.Copy(io.Discard, inc.r)
}

// await waits for the incarnation's end, kills what it left in its
// process group, and returns its exit error once its output is written.
func (g *Group) await(name string, inc *incarnation) error {
	err := inc.cmd.Wait()
	g.mu.Lock()
	if g.procs[name] == inc.cmd {
		delete(g.procs, name)
	}
	// the rest of its process group, as systemd's control-group kill mode
	// does: nothing outlives a child, and the output pipe reaches its end
	_ = syscall.Kill(-inc.cmd.Process.Pid, syscall.SIGKILL)
	g.mu.Unlock()
	select {
	case <-inc.done:
	case <-time.After(time.Second):
		// a process outside the group holds the pipe: stop reading
		inc.r.Close()
		<-inc.done
	}
	inc.r.Close()
	return err
}

// supervise runs a child from its first incarnation until it is down for
// good: restarting it by its policy, then delivering its Exit.
func (g *Group) supervise(s Spec, inc *incarnation) {
	defer g.wg.Done()
	p := s.Policy
	backoff := retry.Backoff{Base: p.Delay, Max: p.MaxDelay}
	var recent []time.Time // the restarts within the last window
	err := g.await(s.Name, inc)
	ran := time.Since(inc.started)
	for {
		if err == nil || !s.Restart || g.life.Err() != nil {
			g.exits <- Exit{Name: s.Name, Err: err}
			return
		}
		if ran >= p.ResetAfter {
			backoff.Reset()
		}
		now := time.Now()
		for len(recent) > 0 && now.Sub(recent[0]) >= p.Window {
			recent = recent[1:]
		}
		if len(recent) >= p.Limit {
			g.logf(s.Name, "exited: %v; not restarting: %d restarts in %v is the limit", err, len(recent), p.Window)
			g.exits <- Exit{Name: s.Name, Err: fmt.Errorf("%w (%d restarts in %v): %w", ErrRestartLimit, len(recent), p.Window, err)}
			return
		}
		recent = append(recent, now)
		d := backoff.Next()
		g.logf(s.Name, "exited: %v; restarting in %v (restart %d of at most %d in %v)", err, d, len(recent), p.Limit, p.Window)
		if !retry.Sleep(g.life, d) {
			g.exits <- Exit{Name: s.Name, Err: err}
			return
		}
		next, serr := g.spawn(s, false)
		if errors.Is(serr, ErrStopped) {
			g.exits <- Exit{Name: s.Name, Err: err}
			return
		}
		if serr != nil {
			// a failed start counts as a failed run
			err, ran = serr, 0
			continue
		}
		err = g.await(s.Name, next)
		ran = time.Since(next.started)
	}
}

// logf writes a line of the group's own about a child to the notices,
// prefixed with its name as its output is, and to its Spec.Log.
func (g *Group) logf(name, format string, args ...any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if g.notices != nil {
		fmt.Fprintf(g.notices, "%-12s| %s\n", name, msg)
	}
	if l := g.specs[name].Log; l != nil {
		fmt.Fprintf(l, "%s tailor local: %s\n", time.Now().Format(time.RFC3339Nano), msg)
	}
}

// Exits delivers each child's end: an exit after which it is not started
// again (a clean exit, a failure without a restart policy, a failure
// after its restart limit, or one during Stop).
func (g *Group) Exits() <-chan Exit { return g.exits }

// Pid returns a running child's process id: its current incarnation's.
func (g *Group) Pid(name string) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.procs[name]
	if !ok {
		return 0, false
	}
	return c.Process.Pid, true
}

// Restarts returns how many times a child was started again.
func (g *Group) Restarts(name string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.restarts[name]
}

// Signal sends sig to a running child's process group.
func (g *Group) Signal(name string, sig syscall.Signal) error {
	pid, ok := g.Pid(name)
	if !ok {
		return fmt.Errorf("%s is not running", name)
	}
	return syscall.Kill(-pid, sig)
}

// Stop ends every child: it cancels pending restarts, starts nothing more,
// sends SIGTERM to each process group and SIGKILL to those still running
// after the grace period. It returns when all have exited.
func (g *Group) Stop() {
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
	g.endLife()
	g.signalAll(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(g.grace):
		g.signalAll(syscall.SIGKILL)
		<-done
	}
}

func (g *Group) signalAll(sig syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.procs {
		_ = syscall.Kill(-c.Process.Pid, sig)
	}
}

// Wait waits until ctx ends, a child in until exits cleanly (success), or a
// required child fails for good, then stops the rest. A child fails for
// good when it exits with an error and is not restarted (no Spec.Restart,
// or its restart limit reached). A child is required unless it is
// Spec.Optional or in tolerated: an optional child that fails for good is
// logged and left down (a worker: the cluster carries on without it). Any
// child may exit cleanly (its work is done). Should every child in until
// fail for good, nothing is left to end the wait: that is a failure too.
// It returns ctx's error, nil on success, or an error wrapping
// ErrChildFailed that names the child (and ErrRestartLimit if it reached
// its limit).
func (g *Group) Wait(ctx context.Context, until, tolerated map[string]bool) error {
	defer g.Stop()
	down := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-g.exits:
			if e.Err == nil {
				if until[e.Name] {
					return nil
				}
				continue // a child that finished its work (a server whose run is over)
			}
			g.mu.Lock()
			spec := g.specs[e.Name]
			g.mu.Unlock()
			if !tolerated[e.Name] && !spec.Optional {
				return fmt.Errorf("%w: %s: %w", ErrChildFailed, e.Name, e.Err)
			}
			g.logf(e.Name, "exited: %v (tolerated; left down)", e.Err)
			down[e.Name] = true
			if allDown(until, down) {
				return fmt.Errorf("%w: %s: %w (and every other one that could end the run is down)", ErrChildFailed, e.Name, e.Err)
			}
		}
	}
}

// allDown reports whether until is not empty and every name in it is down.
func allDown(until, down map[string]bool) bool {
	n := 0
	for name, ok := range until {
		if !ok {
			continue
		}
		if !down[name] {
			return false
		}
		n++
	}
	return n > 0
}
