package coordinator

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// lineLog is a buffered, append-only text file in the output folder that
// several goroutines write lines to. It is flushed at every checkpoint
// (before the pointer moves) and when the leader stops. A nil lineLog
// (the log is off) ignores everything.
type lineLog struct {
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
}

func openLineLog(dir, name, header string) (*lineLog, error) {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	l := &lineLog{f: f, w: bufio.NewWriter(f)}
	if st, err := f.Stat(); err == nil && st.Size() == 0 && header != "" {
		l.w.WriteString(header + "\n")
	}
	return l, nil
}

func (l *lineLog) line(s string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.WriteString(s)
	l.w.WriteByte('\n')
}

func (l *lineLog) flush() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.w.Flush()
}

func (l *lineLog) close() {
	if l == nil {
		return
	}
	l.flush()
	l.f.Close()
}

// stepLog is steps.csv: every finished step's loss as each worker reported
// it (step, epoch, worker, loss with all its digits: equal strings are
// equal floats). A leader that goes back to a checkpoint first writes a
// "# resumed from checkpoint NAME" line, so that the steps run again can be
// compared with the first run's.
type stepLog struct{ *lineLog }

func openStepLog(dir string) (stepLog, error) {
	l, err := openLineLog(dir, "steps.csv", "step,epoch,worker,loss")
	return stepLog{l}, err
}

func (s stepLog) mark(resumed string) { s.line("# resumed from checkpoint " + resumed) }

func (s stepLog) add(step int64, epoch int, worker string, loss float64) {
	s.line(fmt.Sprintf("%d,%d,%s,%s", step, epoch, worker, strconv.FormatFloat(loss, 'g', -1, 64)))
}

// auditLog is audit.log (spec.Audit): every consumed batch, one line
// "seq epoch worker id id ...", seq counting the run's consumed batches. A
// leader that starts training writes "rollback seq" first: the lines from
// seq on, if any, were undone. Tests check with it that every record is
// consumed exactly once per epoch.
type auditLog struct{ *lineLog }

func openAuditLog(dir string) (auditLog, error) {
	l, err := openLineLog(dir, "audit.log", "")
	return auditLog{l}, err
}

func (a auditLog) rollback(seq int64) { a.line("rollback " + strconv.FormatInt(seq, 10)) }

func (a auditLog) add(seq int64, b Batch) {
	if a.lineLog == nil {
		return
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d %d %s", seq, b.Epoch, b.Worker)
	for _, id := range b.IDs {
		sb.WriteByte(' ')
		sb.WriteString(strconv.FormatUint(id, 10))
	}
	a.line(sb.String())
}
