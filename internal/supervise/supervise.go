// Package supervise runs a set of child processes as one unit: it prefixes
// their output with their names, notices when one exits, and stops them all —
// SIGTERM, then SIGKILL after a grace period — when its context ends, so
// nothing is left running. `tailor local` runs its cluster with it.
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
)

// Spec is one child process.
type Spec struct {
	Name string   // shown as the prefix of its output lines
	Path string   // executable
	Args []string // without the program name
	Env  []string // added to the parent's environment
	Dir  string
	// Optional children may exit without stopping the group (a worker that
	// finished); a required child's exit stops everything.
	Optional bool
	// Restart starts the child again, as it was, when it exits with an
	// error while Wait runs (a parameter server that was killed).
	Restart bool
}

// Exit is a child's end.
type Exit struct {
	Name string
	Err  error // nil for exit status 0
}

// Group is a set of running children.
type Group struct {
	out   io.Writer
	grace time.Duration
	mu    sync.Mutex // guards out writes and procs
	procs map[string]*exec.Cmd
	specs map[string]Spec
	exits chan Exit
	wg    sync.WaitGroup
}

// New makes a group writing the children's output to out; children get grace
// to stop after SIGTERM before SIGKILL.
func New(out io.Writer, grace time.Duration) *Group {
	return &Group{out: out, grace: grace, procs: map[string]*exec.Cmd{}, specs: map[string]Spec{}, exits: make(chan Exit, 64)}
}

// Start starts a child in its own process group.
func (g *Group) Start(s Spec) error {
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.Name, err)
	}
	g.mu.Lock()
	g.procs[s.Name] = cmd
	g.specs[s.Name] = s
	g.mu.Unlock()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			g.mu.Lock()
			fmt.Fprintf(g.out, "%-12s| %s\n", s.Name, sc.Text())
			g.mu.Unlock()
		}
		err := cmd.Wait()
		g.mu.Lock()
		delete(g.procs, s.Name)
		g.mu.Unlock()
		g.exits <- Exit{Name: s.Name, Err: err}
	}()
	return nil
}

// Exits delivers each child's exit.
func (g *Group) Exits() <-chan Exit { return g.exits }

// Pid returns a running child's process id.
func (g *Group) Pid(name string) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.procs[name]
	if !ok {
		return 0, false
	}
	return c.Process.Pid, true
}

// Signal sends sig to a running child's process group.
func (g *Group) Signal(name string, sig syscall.Signal) error {
	pid, ok := g.Pid(name)
	if !ok {
		return fmt.Errorf("%s is not running", name)
	}
	return syscall.Kill(-pid, sig)
}

// Stop ends every child: SIGTERM to each process group, SIGKILL to those
// still running after the grace period. It returns when all have exited.
func (g *Group) Stop() {
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

// ErrChildFailed reports a required child's failure.
var ErrChildFailed = errors.New("supervise: a required process exited")

// Wait waits until ctx ends, a child in until exits cleanly (success), or a
// required child — one in neither until nor tolerated — fails, then stops
// the rest. Other children may exit cleanly (their work is done). A tolerated child may exit in any way without ending the wait
// (a worker that was killed: the cluster carries on without it); a child in
// until that fails, unless tolerated, is a failure. It returns ctx's error, nil on success, or
// ErrChildFailed.
func (g *Group) Wait(ctx context.Context, until, tolerated map[string]bool) error {
	defer g.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-g.exits:
			if until[e.Name] && e.Err == nil {
				return nil
			}
			g.mu.Lock()
			spec := g.specs[e.Name]
			g.mu.Unlock()
			if spec.Restart && e.Err != nil {
				g.mu.Lock()
				fmt.Fprintf(g.out, "%-12s| exited: %v; restarting\n", e.Name, e.Err)
				g.mu.Unlock()
				if err := g.Start(spec); err != nil {
					return fmt.Errorf("%w: %s: restart: %v", ErrChildFailed, e.Name, err)
				}
				continue
			}
			if e.Err == nil {
				continue // a child that finished its work (a server whose run is over)
			}
			if tolerated[e.Name] {
				if e.Err != nil {
					g.mu.Lock()
					fmt.Fprintf(g.out, "%-12s| exited: %v (tolerated)\n", e.Name, e.Err)
					g.mu.Unlock()
				}
				continue
			}
			return fmt.Errorf("%w: %s: %v", ErrChildFailed, e.Name, e.Err)
		}
	}
}
