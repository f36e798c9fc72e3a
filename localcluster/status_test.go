package localcluster

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/runstatus"
)

// view is a run of 2 coordinators, 2 servers and 3 workers in state st
// with progress p.
func view(st string, p *coordinator.Progress) *runstatus.View {
	v := &runstatus.View{Run: "local", State: st, Leader: "coord-a", Progress: p}
	for _, m := range []struct {
		role cluster.Role
		id   string
	}{{cluster.RoleCoordinator, "coord-a"}, {cluster.RoleCoordinator, "coord-b"}, {cluster.RoleParamServer, "ps0"},
		{cluster.RoleParamServer, "ps1"}, {cluster.RoleWorker, "w0"}, {cluster.RoleWorker, "w1"}, {cluster.RoleWorker, "w2"}} {
		v.Members = append(v.Members, runstatus.Member{Role: m.role, ID: m.id})
	}
	return v
}

// midEpoch: epoch 3 of 10, 1200 of 4000 images at 100 img/s: 2800 + 7×4000
// images left, 308 s.
var midEpoch = &coordinator.Progress{Epoch: 3, Epochs: 10, Loss: 0.41234, EpochLoss: 0.43, Images: 1200, EpochImages: 4000,
	ImgPerSec: 98.04, EpochImgPerSec: 100, Workers: 3, Phase: "training", ValEpoch: 2, ValMAP: 0.65123, ValLoss: 0.2311}

func TestStatusBlock(t *testing.T) {
	stalled := *midEpoch
	stalled.StalledFor, stalled.WaitingFor = 72, "w1's gradient"
	validating := *midEpoch
	validating.Phase, validating.ValEpoch = "validating", 0
	done := *midEpoch
	done.Epoch, done.Done = 10, true
	for _, c := range []struct {
		name string
		s    snapshot
		want []string
	}{
		{"etcd not answering", snapshot{Run: "local", Elapsed: 3 * time.Second, Err: "context deadline exceeded", Logs: "out/logs"}, []string{
			"run local: etcd not answering: context deadline exceeded · 3s",
			"epoch -: no progress from a leader yet",
			"last event: none",
			"logs: out/logs (--verbose shows them here)",
		}},
		{"waiting", snapshot{Run: "local", Elapsed: 5 * time.Second, View: view(runstatus.StateWaiting, nil), Logs: "L"}, []string{
			"run local: waiting for a coordinator · 5s",
			"epoch -: no progress from a leader yet",
			"members: 2 coordinators, 2 parameter servers, 3 workers",
			"last event: none",
			"logs: L (--verbose shows them here)",
		}},
		{"mid-epoch", snapshot{Run: "local", Elapsed: 95 * time.Second, View: view(runstatus.StateRunning, midEpoch), Logs: "L",
			Event: "w1 | exited: signal: killed; restarting in 200ms", EventAt: 12 * time.Second}, []string{
			"run local: running, leader coord-a · 1m35s",
			"epoch 3/10 [#######.................]  30%  1200/4000 images · ETA 5m8s",
			"loss 0.4123 (epoch mean 0.4300) · 98.0 img/s · val mAP 0.6512, loss 0.2311 (epoch 2)",
			"members: 2 coordinators, 2 parameter servers, 3 workers",
			"last event (12s ago): w1 | exited: signal: killed; restarting in 200ms",
			"logs: L (--verbose shows them here)",
		}},
		{"validating, nothing validated yet", snapshot{Run: "local", Elapsed: time.Minute, View: view(runstatus.StateRunning, &validating), Logs: "L"}, []string{
			"run local: running, leader coord-a (validating) · 1m0s",
			"epoch 3/10 [#######.................]  30%  1200/4000 images · ETA 5m8s",
			"loss 0.4123 (epoch mean 0.4300) · 98.0 img/s · val mAP - (no epoch validated yet)",
			"members: 2 coordinators, 2 parameter servers, 3 workers",
			"last event: none",
			"logs: L (--verbose shows them here)",
		}},
		{"stalled", snapshot{Run: "local", Elapsed: 2 * time.Hour, View: view(runstatus.StateStalled, &stalled), Logs: "L"}, []string{
			"run local: STALLED for 72 s, waiting for w1's gradient · 2h0m0s",
		}},
		{"done", snapshot{Run: "local", Elapsed: time.Minute, View: view(runstatus.StateDone, &done), Logs: "L"}, []string{
			"run local: done · 1m0s",
			"epoch 10/10: all epochs trained",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := statusBlock(c.s, 0)
			if len(got) < len(c.want) {
				t.Fatalf("got %d lines, want at least %d:\n%s", len(got), len(c.want), strings.Join(got, "\n"))
			}
			for i, w := range c.want {
				if got[i] != w {
					t.Errorf("line %d:\n got %q\nwant %q", i, got[i], w)
				}
			}
		})
	}
}

// Lines are cut to the terminal's width, so that none wraps and the
// redraw's cursor movements stay right.
func TestStatusBlockWidth(t *testing.T) {
	s := snapshot{Run: "local", View: view(runstatus.StateRunning, midEpoch), Event: strings.Repeat("x", 300), Logs: "L"}
	for _, l := range statusBlock(s, 40) {
		if n := len([]rune(l)); n > 40 {
			t.Errorf("line of %d runes, want at most 40: %q", n, l)
		}
	}
}

func TestStatusLine(t *testing.T) {
	done := *midEpoch
	done.Epoch, done.Done = 10, true
	for _, c := range []struct {
		name string
		s    snapshot
		want string
	}{
		{"starting", snapshot{Run: "local", Elapsed: time.Second}, "status 1s: run local starting"},
		{"mid-epoch", snapshot{Run: "local", Elapsed: 95 * time.Second, View: view(runstatus.StateRunning, midEpoch)},
			"status 1m35s: run local running, leader coord-a; epoch 3/10 30%, loss 0.4123, 98.0 img/s, val mAP 0.6512 (epoch 2), ETA 5m8s; 2 coordinators, 2 parameter servers, 3 workers"},
		{"done", snapshot{Run: "local", Elapsed: time.Minute, View: view(runstatus.StateDone, &done)},
			"status 1m0s: run local done; epoch 10/10, all trained, loss 0.4123, 98.0 img/s, val mAP 0.6512 (epoch 2); 2 coordinators, 2 parameter servers, 3 workers"},
	} {
		if got := statusLine(c.s); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestETAAndBar(t *testing.T) {
	for _, c := range []struct {
		p    coordinator.Progress
		want time.Duration
		ok   bool
	}{
		{coordinator.Progress{Epoch: 1, Epochs: 1, Images: 50, EpochImages: 100, EpochImgPerSec: 10}, 5 * time.Second, true},
		{coordinator.Progress{Epoch: 1, Epochs: 2, Images: 150, EpochImages: 100, EpochImgPerSec: 10}, 10 * time.Second, true}, // over the count: none left of it
		{coordinator.Progress{Epoch: 1, Epochs: 2, Images: 50, EpochImages: 100}, 0, false},                                    // no rate yet
		{coordinator.Progress{Epoch: 0, Epochs: 2, EpochImages: 100, EpochImgPerSec: 10}, 0, false},                            // not started
		{coordinator.Progress{Epoch: 2, Epochs: 2, Images: 50, EpochImages: 100, EpochImgPerSec: 10, Done: true}, 0, false},
	} {
		got, ok := eta(&c.p)
		if got != c.want || ok != c.ok {
			t.Errorf("eta(%+v) = %v, %v; want %v, %v", c.p, got, ok, c.want, c.ok)
		}
	}
	for _, c := range []struct {
		done, total, width int
		want               string
	}{
		{0, 10, 4, "[....]"}, {5, 10, 4, "[##..]"}, {10, 10, 4, "[####]"}, {20, 10, 4, "[####]"}, {3, 0, 4, "[....]"},
	} {
		if got := bar(c.done, c.total, c.width); got != c.want {
			t.Errorf("bar(%d, %d, %d) = %q, want %q", c.done, c.total, c.width, got, c.want)
		}
	}
}

// The plain reporter: a line at once when the state or the epoch changes,
// not at every poll; the supervisor's lines as they come; the last status
// when it stops.
func TestReporterPlain(t *testing.T) {
	var out bytes.Buffer
	p := *midEpoch
	views := []*coordinator.Progress{&p, &p, &p}
	next := p
	next.Epoch = 4
	views = append(views, &next, &next)
	i := 0
	r := &reporter{w: &out, width: func() int { return 0 }, run: "local", logs: "L", started: time.Now(),
		collect: func(context.Context) (runstatus.View, error) {
			if i >= len(views) {
				return runstatus.View{}, errors.New("etcd gone")
			}
			v := view(runstatus.StateRunning, views[i])
			i++
			return *v, nil
		}}
	ctx := context.Background()
	for range 5 {
		r.poll(ctx)
	}
	if _, err := r.Write([]byte("w1          | exited: signal: killed; restarting in 200ms\n")); err != nil {
		t.Fatal(err)
	}
	r.poll(ctx) // etcd gone: the last view stays
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "epoch 3/10") || !strings.Contains(lines[1], "epoch 4/10") ||
		lines[2] != "w1          | exited: signal: killed; restarting in 200ms" {
		t.Errorf("output:\n%s\nwant a line for epoch 3, one for epoch 4 and the supervisor's line", out.String())
	}
	if r.snap.Err != "etcd gone" || r.snap.View == nil {
		t.Errorf("after a failed poll: err %q, view %v; want the error and the last view", r.snap.Err, r.snap.View)
	}
}

// On a terminal the block is redrawn in place: the cursor goes up over the
// old block; a supervisor line is printed above it, then the block again.
func TestReporterTerminal(t *testing.T) {
	var out bytes.Buffer
	r := &reporter{w: &out, tty: true, width: func() int { return 80 }, run: "local", logs: "L", started: time.Now(),
		collect: func(context.Context) (runstatus.View, error) { return *view(runstatus.StateRunning, midEpoch), nil }}
	r.poll(context.Background())
	n := r.drawn
	if n < 5 || !strings.HasPrefix(out.String(), "\r\x1b[2K") {
		t.Fatalf("first draw: %d lines, output %q; want a block and no cursor-up", n, out.String())
	}
	out.Reset()
	r.poll(context.Background())
	if !strings.HasPrefix(out.String(), "\x1b["+strconv.Itoa(n)+"A") {
		t.Errorf("redraw starts %q, want the cursor %d lines up", out.String()[:min(10, out.Len())], n)
	}
	out.Reset()
	if _, err := r.Write([]byte("ps0         | exited: signal: killed; restarting in 200ms\n")); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	clear := "\x1b[" + strconv.Itoa(n) + "A\x1b[J"
	line := "ps0         | exited: signal: killed; restarting in 200ms\n"
	if !strings.HasPrefix(s, clear+line) || !strings.Contains(s, "last event (0s ago): ps0 | exited: signal: killed; restarting in 200ms") {
		t.Errorf("after a supervisor line: %q\nwant the block cleared, the line, the block with it as the last event", s)
	}
}
