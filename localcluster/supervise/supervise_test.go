package supervise

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuf) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !isZombie(string(st))
}

func isZombie(stat string) bool {
	i := strings.LastIndexByte(stat, ')')
	return i > 0 && len(stat) > i+2 && stat[i+2] == 'Z'
}

// liveGroupMembers lists the non-zombie processes of process group pgid.
func liveGroupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var m []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(st)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			m = append(m, pid)
		}
	}
	return m
}

// Cancelling stops every child, including one that ignores SIGTERM and its
// own children; nothing is left running.
func TestStopLeavesNothing(t *testing.T) {
	var out syncBuf
	g := New(&out, 500*time.Millisecond)
	if err := g.Start(Spec{Name: "polite", Path: "/bin/sh", Args: []string{"-c", "echo hello; sleep 60"}}); err != nil {
		t.Fatal(err)
	}
	// ignores TERM and has a grandchild
	if err := g.Start(Spec{Name: "stubborn", Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; echo ready; sleep 60 & wait"}}); err != nil {
		t.Fatal(err)
	}
	pids := []int{}
	for _, n := range []string{"polite", "stubborn"} {
		p, ok := g.Pid(n)
		if !ok {
			t.Fatalf("%s not running", n)
		}
		pids = append(pids, p)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "polite      | hello") || !strings.Contains(out.String(), "stubborn    | ready") {
		if time.Now().After(deadline) {
			t.Fatalf("no prefixed output: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := g.Wait(ctx, nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait: %v", err)
	}
	// the stubborn child needed SIGKILL after the grace period
	if d := time.Since(start); d < 500*time.Millisecond || d > 5*time.Second {
		t.Errorf("stop took %v, want the 500ms grace then SIGKILL", d)
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("pid %d still running", p)
		}
		// the process group is gone too (grandchildren); zombies waiting
		// for init to reap them do not count
		if m := liveGroupMembers(t, p); len(m) > 0 {
			t.Errorf("process group %d still has live members %v", p, m)
		}
	}
}

func TestWaitOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		script   string
		until    string
		tolerate bool
		wantErr  error
	}{
		{"awaited child succeeds", "exit 0", "job", false, nil},
		{"awaited child fails", "exit 3", "job", false, ErrChildFailed},
		{"other required child fails", "exit 1", "other", false, ErrChildFailed},
		{"tolerated child fails, awaited one succeeds", "exit 1", "late", true, nil},
		{"required child finishes, awaited one succeeds", "exit 0", "late", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := New(&syncBuf{}, time.Second)
			if err := g.Start(Spec{Name: "job", Path: "/bin/sh", Args: []string{"-c", tc.script}}); err != nil {
				t.Fatal(err)
			}
			if err := g.Start(Spec{Name: "bystander", Path: "/bin/sh", Args: []string{"-c", "sleep 60"}}); err != nil {
				t.Fatal(err)
			}
			var tolerated map[string]bool
			if tc.until == "late" {
				// job ends first; "late" succeeds after it
				if tc.tolerate {
					tolerated = map[string]bool{"job": true}
				}
				if err := g.Start(Spec{Name: "late", Path: "/bin/sh", Args: []string{"-c", "sleep 0.3"}}); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := g.Wait(ctx, map[string]bool{tc.until: true}, tolerated)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Wait: %v, want %v", err, tc.wantErr)
			}
			if _, ok := g.Pid("bystander"); ok {
				t.Error("bystander still running after Wait")
			}
		})
	}
}

// A child with Restart is started again when it is killed, and the wait
// goes on until the until-child succeeds.
func TestRestart(t *testing.T) {
	var out syncBuf
	g := New(&out, time.Second)
	if err := g.Start(Spec{Name: "ps", Path: "/bin/sh", Args: []string{"-c", "echo up; sleep 60"}, Restart: true}); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(Spec{Name: "lead", Path: "/bin/sh", Args: []string{"-c", "sleep 1.5"}}); err != nil {
		t.Fatal(err)
	}
	first, ok := g.Pid("ps")
	if !ok {
		t.Fatal("ps not running")
	}
	res := make(chan error, 1)
	go func() { res <- g.Wait(context.Background(), map[string]bool{"lead": true}, nil) }()
	waitUntil(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "ps          | up") }, out.String)
	if err := g.Signal("ps", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if pid, ok := g.Pid("ps"); ok && pid != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ps not restarted:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := <-res; err != nil {
		t.Fatalf("wait: %v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), "ps          | up"); n != 2 || !strings.Contains(out.String(), "restarting") {
		t.Errorf("ps started %d times:\n%s", n, out.String())
	}
}

// waitUntil polls cond until it holds; after d it fails the test with
// what's output.
func waitUntil(t *testing.T, d time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v:\n%s", d, what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newPid waits until name runs under a pid other than old and returns it.
func newPid(t *testing.T, g *Group, name string, old int, out *syncBuf) int {
	t.Helper()
	var pid int
	waitUntil(t, 10*time.Second, func() bool {
		p, ok := g.Pid(name)
		pid = p
		return ok && p != old
	}, out.String)
	return pid
}

// gone waits until pid and its process group have no live process.
func gone(t *testing.T, pid int) {
	t.Helper()
	waitUntil(t, 5*time.Second, func() bool { return !alive(pid) && len(liveGroupMembers(t, pid)) == 0 },
		func() string { return fmt.Sprintf("pid %d or its group still running", pid) })
}

// failThrice counts its runs in $D/runs: the first three fail after 0.1 s,
// the fourth stays up.
const failThrice = `n=$(cat "$D/runs" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$D/runs"; echo run
if [ $n -ge 4 ]; then echo up; exec sleep 60; fi
sleep 0.1; exit 1`

// The restart policy: a failed child is started again after a doubling
// delay, as it was, up to its limit; a clean exit is not restarted.
func TestRestartPolicy(t *testing.T) {
	quick := RestartPolicy{Delay: 20 * time.Millisecond, MaxDelay: 40 * time.Millisecond, Limit: 3, Window: time.Minute}
	for _, tc := range []struct {
		name string
		spec Spec
		// run drives the child while Wait runs and checks what it can
		run func(t *testing.T, g *Group, out *syncBuf)
		// wantErr is Wait's result, after run; nil: Wait ends by ctx
		wantErr      []error
		wantRestarts int
		marker       string // a line each incarnation writes
		wantLog      []string
	}{
		{
			name: "killed child restarted with backoff and a new pid",
			spec: Spec{Name: "ps", Path: "/bin/sh", Args: []string{"-c", "echo up $X; exec sleep 60"}, Env: []string{"X=same-env"},
				Restart: true, Policy: RestartPolicy{Delay: 300 * time.Millisecond, MaxDelay: time.Second, Limit: 3, Window: time.Minute}},
			run: func(t *testing.T, g *Group, out *syncBuf) {
				pid, _ := g.Pid("ps")
				for i, wantDelay := range []time.Duration{300 * time.Millisecond, 600 * time.Millisecond} {
					// incarnation i is up (and has its environment)
					waitUntil(t, 5*time.Second, func() bool { return strings.Count(out.String(), "ps          | up same-env") == i+1 }, out.String)
					killed := time.Now()
					if err := g.Signal("ps", syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
					next := newPid(t, g, "ps", pid, out)
					if d := time.Since(killed); d < wantDelay {
						t.Errorf("restart %d after %v, want at least the %v backoff", i+1, d, wantDelay)
					}
					gone(t, pid)
					pid = next
				}
				if n := g.Restarts("ps"); n != 2 {
					t.Errorf("Restarts = %d, want 2", n)
				}
			},
			wantRestarts: 2,
			marker:       "ps          | up same-env",
			wantLog: []string{
				"ps          | exited: signal: killed; restarting in 300ms (restart 1 of at most 3 in 1m0s)",
				"ps          | exited: signal: killed; restarting in 600ms (restart 2 of at most 3 in 1m0s)",
			},
		},
		{
			name:         "failing required child stops at the limit",
			spec:         Spec{Name: "flaky", Path: "/bin/sh", Args: []string{"-c", "echo try; exit 3"}, Restart: true, Policy: quick},
			wantErr:      []error{ErrChildFailed, ErrRestartLimit},
			wantRestarts: 3,
			marker:       "flaky       | try",
			wantLog: []string{
				"flaky       | exited: exit status 3; restarting in 20ms (restart 1 of at most 3 in 1m0s)",
				"flaky       | exited: exit status 3; restarting in 40ms (restart 2 of at most 3 in 1m0s)",
				"flaky       | exited: exit status 3; restarting in 40ms (restart 3 of at most 3 in 1m0s)",
				"flaky       | exited: exit status 3; not restarting: 3 restarts in 1m0s is the limit",
			},
		},
		{
			name: "failing optional child is left down",
			spec: Spec{Name: "flaky", Path: "/bin/sh", Args: []string{"-c", "echo try; exit 3"}, Restart: true, Optional: true, Policy: quick},
			run: func(t *testing.T, g *Group, out *syncBuf) {
				waitUntil(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "(tolerated; left down)") }, out.String)
			},
			wantRestarts: 3,
			marker:       "flaky       | try",
			wantLog:      []string{"not restarting: 3 restarts in 1m0s is the limit", "flaky       | exited: supervise: restart limit reached"},
		},
		{
			// every run lasts longer than ResetAfter: each wait is Delay
			name: "backoff starts again after a long enough run",
			spec: Spec{Name: "slow", Path: "/bin/sh", Args: []string{"-c", failThrice}, Restart: true,
				Policy: RestartPolicy{Delay: 20 * time.Millisecond, MaxDelay: time.Second, ResetAfter: 50 * time.Millisecond, Limit: 5, Window: time.Minute}},
			run: func(t *testing.T, g *Group, out *syncBuf) {
				waitUntil(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "slow        | up") }, out.String)
			},
			wantRestarts: 3,
			marker:       "slow        | run",
			wantLog: []string{
				"slow        | exited: exit status 1; restarting in 20ms (restart 1 of at most 5 in 1m0s)",
				"slow        | exited: exit status 1; restarting in 20ms (restart 2 of at most 5 in 1m0s)",
				"slow        | exited: exit status 1; restarting in 20ms (restart 3 of at most 5 in 1m0s)",
			},
		},
		{
			// the limit counts the restarts within the last window only
			name: "restarts older than the window do not count",
			spec: Spec{Name: "slow", Path: "/bin/sh", Args: []string{"-c", failThrice}, Restart: true,
				Policy: RestartPolicy{Delay: 10 * time.Millisecond, Limit: 1, Window: 100 * time.Millisecond}},
			run: func(t *testing.T, g *Group, out *syncBuf) {
				waitUntil(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "slow        | up") }, out.String)
			},
			wantRestarts: 3,
			marker:       "slow        | run",
			wantLog:      []string{"slow        | exited: exit status 1; restarting in 40ms (restart 1 of at most 1 in 100ms)"},
		},
		{
			name: "clean exit not restarted",
			spec: Spec{Name: "job", Path: "/bin/sh", Args: []string{"-c", "echo once; exit 0"}, Restart: true, Policy: quick},
			run: func(t *testing.T, g *Group, out *syncBuf) {
				waitUntil(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "job         | once") }, out.String)
			},
			marker: "job         | once",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuf
			g := New(&out, time.Second)
			// lead ends the wait when the test says so (a file appears)
			flag := filepath.Join(t.TempDir(), "go")
			if err := g.Start(Spec{Name: "lead", Path: "/bin/sh", Args: []string{"-c", "while [ ! -e " + flag + " ]; do sleep 0.02; done"}}); err != nil {
				t.Fatal(err)
			}
			tc.spec.Env = append(tc.spec.Env, "D="+t.TempDir())
			if err := g.Start(tc.spec); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res := make(chan error, 1)
			go func() { res <- g.Wait(ctx, map[string]bool{"lead": true}, nil) }()
			if tc.run != nil {
				tc.run(t, g, &out)
			}
			if len(tc.wantErr) == 0 {
				if err := os.WriteFile(flag, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := <-res
			if len(tc.wantErr) == 0 && err != nil {
				t.Errorf("Wait: %v, want nil\n%s", err, out.String())
			}
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("Wait: %v, want %v", err, want)
				}
			}
			if err != nil && !strings.Contains(err.Error(), tc.spec.Name) {
				t.Errorf("Wait: %v does not name %s", err, tc.spec.Name)
			}
			if n := g.Restarts(tc.spec.Name); n != tc.wantRestarts {
				t.Errorf("Restarts(%s) = %d, want %d\n%s", tc.spec.Name, n, tc.wantRestarts, out.String())
			}
			if n, want := strings.Count(out.String(), tc.marker+"\n"), tc.wantRestarts+1; n != want {
				t.Errorf("%s started %d times, want %d\n%s", tc.spec.Name, n, want, out.String())
			}
			for _, want := range tc.wantLog {
				if !strings.Contains(out.String(), want) {
					t.Errorf("the output lacks %q:\n%s", want, out.String())
				}
			}
			if tc.wantRestarts == 0 && strings.Contains(out.String(), "restarting") {
				t.Errorf("restarted:\n%s", out.String())
			}
			if _, ok := g.Pid(tc.spec.Name); ok {
				t.Errorf("%s still running after Wait", tc.spec.Name)
			}
		})
	}
}

// A restart pending its backoff is cancelled by Stop or by the end of
// Wait's ctx: nothing starts, nothing is left running, and both return
// without waiting for the backoff.
func TestStopDuringBackoff(t *testing.T) {
	for _, how := range []string{"stop", "cancel"} {
		t.Run(how, func(t *testing.T) {
			var out syncBuf
			g := New(&out, time.Second)
			spec := Spec{Name: "ps", Path: "/bin/sh", Args: []string{"-c", "echo up; exec sleep 60"},
				Restart: true, Policy: RestartPolicy{Delay: time.Minute, Limit: 3, Window: time.Hour}}
			if err := g.Start(spec); err != nil {
				t.Fatal(err)
			}
			pid, ok := g.Pid("ps")
			if !ok {
				t.Fatal("ps not running")
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			res := make(chan error, 1)
			go func() { res <- g.Wait(ctx, nil, nil) }()
			waitUntil(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "ps          | up") }, out.String)
			if err := g.Signal("ps", syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "restarting in 1m0s") }, out.String)
			start := time.Now()
			if how == "stop" {
				g.Stop()
			} else {
				cancel()
			}
			select {
			case err := <-res:
				if how == "cancel" && !errors.Is(err, context.Canceled) {
					t.Errorf("Wait: %v, want %v", err, context.Canceled)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Wait did not return after %s:\n%s", how, out.String())
			}
			g.Stop() // returns at once when stopped already
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("stopping took %v, want no wait for the backoff", d)
			}
			if n := g.Restarts("ps"); n != 0 {
				t.Errorf("Restarts = %d after a stop during the backoff, want 0", n)
			}
			if p, ok := g.Pid("ps"); ok {
				t.Errorf("ps running as %d after Stop", p)
			}
			if err := g.Start(spec); !errors.Is(err, ErrStopped) {
				t.Errorf("Start after Stop: %v, want %v", err, ErrStopped)
			}
			gone(t, pid)
			if n := strings.Count(out.String(), "ps          | up"); n != 1 {
				t.Errorf("ps started %d times, want 1:\n%s", n, out.String())
			}
		})
	}
}

// What a child leaves in its process group when it exits is killed: no
// process outlives its child, and the exit is seen at once.
func TestExitKillsLeftovers(t *testing.T) {
	var out syncBuf
	g := New(&out, time.Second)
	if err := g.Start(Spec{Name: "job", Path: "/bin/sh", Args: []string{"-c", "sleep 60 & echo $!; exit 0"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Wait(ctx, map[string]bool{"job": true}, nil); err != nil {
		t.Fatalf("Wait: %v\n%s", err, out.String())
	}
	line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out.String()), "job         |"))
	pid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("no pid in the output %q: %v", out.String(), err)
	}
	gone(t, pid)
}

// Each child's lines go to its own Log, unprefixed, with the group's lines
// about it; with no out the terminal gets only the notices (exits and
// restarts), prefixed with the child's name.
func TestLogsAndNotices(t *testing.T) {
	var notices, aLog, bLog syncBuf
	g := New(nil, time.Second)
	g.SetNotices(&notices)
	if err := g.Start(Spec{Name: "a", Path: "/bin/sh", Args: []string{"-c", "echo a-line; exit 3"}, Log: &aLog, Restart: true,
		Policy: RestartPolicy{Limit: 1, Delay: 10 * time.Millisecond}, Optional: true}); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(Spec{Name: "b", Path: "/bin/sh", Args: []string{"-c", "echo b-line; sleep 0.5"}, Log: &bLog}); err != nil {
		t.Fatal(err)
	}
	if err := g.Wait(context.Background(), map[string]bool{"b": true}, nil); err != nil {
		t.Fatalf("wait: %v\nnotices:\n%s", err, notices.String())
	}
	if got := strings.Count(aLog.String(), "a-line\n"); got != 2 {
		t.Errorf("a's log has its line %d times, want 2 (a restart):\n%s", got, aLog.String())
	}
	if !strings.Contains(aLog.String(), "tailor local: exited: exit status 3; restarting in") || strings.Contains(aLog.String(), "b-line") {
		t.Errorf("a's log lacks its restart or has b's lines:\n%s", aLog.String())
	}
	if bLog.String() != "b-line\n" {
		t.Errorf("b's log %q, want its one line", bLog.String())
	}
	n := notices.String()
	if strings.Contains(n, "a-line") || strings.Contains(n, "b-line") || !strings.Contains(n, "a           | exited: exit status 3; restarting in ") ||
		!strings.Contains(n, "not restarting") {
		t.Errorf("notices: want a's exits and restart only:\n%s", n)
	}
}
