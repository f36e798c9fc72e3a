package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/runstatus"
)

// What `tailor local` shows of a run while it trains, without --verbose:
// on a terminal one block redrawn in place (statusBlock), elsewhere a plain
// line (statusLine) when the state or the epoch changes (a new epoch starts
// once the one before is validated: its line has that validation), and
// every plainEvery otherwise. The numbers come from etcd (the
// run's state, leader, members and the leader's progress record, as
// `tailor status` reads them); the events are the supervisor's lines
// about the processes (exits, restarts), shown as they come.
const (
	ttyEvery   = time.Second      // redraw period on a terminal
	plainPoll  = 2 * time.Second  // etcd poll period elsewhere
	plainEvery = 10 * time.Second // longest time between plain lines
	barWidth   = 24
)

// snapshot is what one status shows.
type snapshot struct {
	Run     string
	Elapsed time.Duration
	View    *runstatus.View // nil before etcd answered
	Err     string          // why etcd could not be read, if it could not
	Event   string          // the last supervisor line ("w0 | exited: ...")
	EventAt time.Duration   // how long ago it came
	Logs    string          // the folder of the processes' logs
}

// progressOf is the view's progress record, nil if it has none.
func (s snapshot) progressOf() *coordinator.Progress {
	if s.View == nil {
		return nil
	}
	return s.View.Progress
}

// stateText says the run's state: "running, leader coord-a", "STALLED for
// 72 s, waiting for ...", "waiting for a coordinator", "done".
func (s snapshot) stateText() string {
	v := s.View
	if v == nil {
		if s.Err != "" {
			return "etcd not answering: " + s.Err
		}
		return "starting"
	}
	switch v.State {
	case runstatus.StateRunning:
		st := "running, leader " + v.Leader
		if p := v.Progress; p != nil && p.Phase != "" && p.Phase != "training" {
			st += " (" + p.Phase + ")"
		}
		return st
	case runstatus.StateStalled:
		st := "STALLED"
		if p := v.Progress; p != nil {
			st += fmt.Sprintf(" for %.0f s", p.StalledFor)
			if p.WaitingFor != "" {
				st += ", waiting for " + p.WaitingFor
			}
		}
		return st
	case runstatus.StateWaiting:
		return "waiting for a coordinator"
	}
	return v.State
}

// eta is the training time left at the epoch's image rate (validation
// and checkpoints not counted); false when it is not known.
func eta(p *coordinator.Progress) (time.Duration, bool) {
	if p == nil || p.EpochImages <= 0 || p.EpochImgPerSec <= 0 || p.Epoch < 1 || p.Done {
		return 0, false
	}
	left := max(p.EpochImages-p.Images, 0) + max(p.Epochs-p.Epoch, 0)*p.EpochImages
	return time.Duration(float64(left) / p.EpochImgPerSec * float64(time.Second)), true
}

// bar draws done out of total in width cells.
func bar(done, total, width int) string {
	n := 0
	if total > 0 {
		n = min(width, max(0, done*width/total))
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

// members counts the live members by role: "2 coordinators, 2 parameter
// servers, 3 workers".
func members(v *runstatus.View) string {
	n := map[cluster.Role]int{}
	for _, m := range v.Members {
		n[m.Role]++
	}
	return fmt.Sprintf("%s, %s, %s", count(n[cluster.RoleCoordinator], "coordinator"), count(n[cluster.RoleParamServer], "parameter server"),
		count(n[cluster.RoleWorker], "worker"))
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// short formats a duration to the second (to the minute past an hour).
func short(d time.Duration) string {
	if d >= time.Hour {
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
}

// statusBlock is the terminal's block, one string per line, each cut to
// width (0: no limit).
func statusBlock(s snapshot, width int) []string {
	lines := []string{fmt.Sprintf("run %s: %s · %s", s.Run, s.stateText(), short(s.Elapsed))}
	p := s.progressOf()
	switch {
	case p == nil:
		lines = append(lines, "epoch -: no progress from a leader yet")
	case p.Done || (s.View != nil && s.View.State == runstatus.StateDone):
		lines = append(lines, fmt.Sprintf("epoch %d/%d: all epochs trained", p.Epoch, p.Epochs))
	default:
		l := fmt.Sprintf("epoch %d/%d", p.Epoch, p.Epochs)
		if p.EpochImages > 0 {
			l += fmt.Sprintf(" %s %3d%%  %d/%d images", bar(p.Images, p.EpochImages, barWidth), min(100, 100*p.Images/p.EpochImages), p.Images, p.EpochImages)
		} else {
			l += fmt.Sprintf("  %d images", p.Images)
		}
		if d, ok := eta(p); ok {
			l += " · ETA " + short(d)
		}
		lines = append(lines, l)
	}
	if p != nil {
		l := fmt.Sprintf("loss %.4f (epoch mean %.4f) · %.1f img/s", p.Loss, p.EpochLoss, p.ImgPerSec)
		if p.ValEpoch > 0 {
			l += fmt.Sprintf(" · val mAP %.4f, loss %.4f (epoch %d)", p.ValMAP, p.ValLoss, p.ValEpoch)
		} else {
			l += " · val mAP - (no epoch validated yet)"
		}
		lines = append(lines, l)
	}
	if s.View != nil {
		lines = append(lines, "members: "+members(s.View))
	}
	if s.Event != "" {
		lines = append(lines, fmt.Sprintf("last event (%s ago): %s", short(s.EventAt), s.Event))
	} else {
		lines = append(lines, "last event: none")
	}
	lines = append(lines, "logs: "+s.Logs+" (--verbose shows them here)")
	if width > 0 {
		for i, l := range lines {
			if r := []rune(l); len(r) > width {
				lines[i] = string(r[:width-1]) + "…"
			}
		}
	}
	return lines
}

// statusLine is the plain status line of s.
func statusLine(s snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "status %s: run %s %s", short(s.Elapsed), s.Run, s.stateText())
	if p := s.progressOf(); p != nil {
		if p.Done {
			fmt.Fprintf(&b, "; epoch %d/%d, all trained", p.Epoch, p.Epochs)
		} else {
			fmt.Fprintf(&b, "; epoch %d/%d", p.Epoch, p.Epochs)
			if p.EpochImages > 0 {
				fmt.Fprintf(&b, " %d%%", min(100, 100*p.Images/p.EpochImages))
			}
		}
		fmt.Fprintf(&b, ", loss %.4f, %.1f img/s", p.Loss, p.ImgPerSec)
		if p.ValEpoch > 0 {
			fmt.Fprintf(&b, ", val mAP %.4f (epoch %d)", p.ValMAP, p.ValEpoch)
		}
		if d, ok := eta(p); ok {
			b.WriteString(", ETA " + short(d))
		}
	}
	if s.View != nil {
		b.WriteString("; " + members(s.View))
	}
	return b.String()
}

// lineKey is what makes a plain line due at once when it changes.
func lineKey(s snapshot) string {
	if s.View == nil {
		return "-"
	}
	k := s.View.State
	if p := s.View.Progress; p != nil {
		k += fmt.Sprintf("/%d/%v", p.Epoch, p.Done)
	}
	return k
}

// reporter draws the status of a run while it trains, and passes the
// supervisor's lines on (Write). Its poll loop is a goroutine that start
// begins and the stop func start returns ends (and waits for).
type reporter struct {
	w       io.Writer
	tty     bool
	width   func() int // terminal columns; 0: unknown
	run     string
	logs    string
	started time.Time
	collect func(context.Context) (runstatus.View, error)

	mu      sync.Mutex
	snap    snapshot
	drawn   int // lines of the block on screen (tty)
	key     string
	printed time.Time // of the last plain line
	event   string
	eventAt time.Time
	partial []byte // a notice line not ended yet
}

// newReporter reports the run through cli to w, a terminal if tty.
func newReporter(w io.Writer, tty bool, cli *clientv3.Client, run, logs string) *reporter {
	return &reporter{w: w, tty: tty, width: func() int { return terminalWidth(w) }, run: run, logs: logs, started: time.Now(),
		collect: func(ctx context.Context) (runstatus.View, error) {
			return runstatus.Collect(ctx, cli, run, runstatus.Options{EtcdOnly: true})
		}}
}

// Write takes the supervisor's lines about the processes: each is the
// last event, printed at once (on a terminal above the block).
func (r *reporter) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.partial = append(r.partial, b...)
	for {
		i := bytes.IndexByte(r.partial, '\n')
		if i < 0 {
			break
		}
		line := string(r.partial[:i])
		r.partial = r.partial[i+1:]
		r.event, r.eventAt = strings.Join(strings.Fields(line), " "), time.Now()
		r.clearLocked()
		fmt.Fprintln(r.w, line)
		if r.tty {
			r.drawLocked()
		}
	}
	if len(r.partial) == 0 {
		r.partial = nil
	}
	return len(b), nil
}

// terminalWidth is the column count of the terminal w is, 0 if unknown.
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

// start polls and draws until stop is called; stop draws the last status
// (the run's end) and returns once the loop has ended.
func (r *reporter) start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	every := plainPoll
	if r.tty {
		every = ttyEvery
	}
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			r.poll(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
		fctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		r.update(fctx)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.tty {
			r.drawLocked()
			r.drawn = 0 // leave the last block on screen
		} else {
			fmt.Fprintln(r.w, statusLine(r.snap))
		}
	}
}

// update reads the run's status into the snapshot.
func (r *reporter) update(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	v, err := r.collect(cctx)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			r.snap.Err = err.Error()
		}
	} else {
		r.snap.View, r.snap.Err = &v, ""
	}
}

// poll updates the snapshot and draws it: on a terminal always, elsewhere
// when a line is due.
func (r *reporter) poll(ctx context.Context) {
	r.update(ctx)
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tty {
		r.drawLocked()
		return
	}
	r.fillLocked()
	now := time.Now()
	if k := lineKey(r.snap); k != r.key || now.Sub(r.printed) >= plainEvery {
		r.key, r.printed = k, now
		fmt.Fprintln(r.w, statusLine(r.snap))
	}
}

// fillLocked sets the snapshot's clock and event fields.
func (r *reporter) fillLocked() {
	now := time.Now()
	r.snap.Run, r.snap.Logs, r.snap.Elapsed = r.run, r.logs, now.Sub(r.started)
	r.snap.Event, r.snap.EventAt = r.event, now.Sub(r.eventAt)
}

// clearLocked erases the block drawn on the terminal.
func (r *reporter) clearLocked() {
	if !r.tty || r.drawn == 0 {
		return
	}
	fmt.Fprintf(r.w, "\x1b[%dA\x1b[J", r.drawn)
	r.drawn = 0
}

// drawLocked redraws the block in place.
func (r *reporter) drawLocked() {
	r.fillLocked()
	lines := statusBlock(r.snap, r.width())
	var b strings.Builder
	if r.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", r.drawn)
	}
	for _, l := range lines {
		b.WriteString("\r\x1b[2K")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	b.WriteString("\x1b[J") // a shorter block leaves no old lines below
	io.WriteString(r.w, b.String())
	r.drawn = len(lines)
}
