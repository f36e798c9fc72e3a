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
	time.Sleep(200 * time.Millisecond)
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
