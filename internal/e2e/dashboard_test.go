package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium is the headless browser the dashboard's test drives: Debian's
// chromium (scripts/setup.sh --test installs it), or TAILOR_CHROMIUM. A
// missing browser fails the test; TAILOR_SKIP_BROWSER=1 skips it and
// says so.
func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv("TAILOR_SKIP_BROWSER") != "" {
		t.Skip("TAILOR_SKIP_BROWSER is set: the dashboard's browser test did NOT run")
	}
	name := os.Getenv("TAILOR_CHROMIUM")
	if name == "" {
		name = "chromium"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("the dashboard's browser test needs %s (apt-get install chromium; scripts/setup.sh --test installs it; TAILOR_SKIP_BROWSER=1 skips the test): %v", name, err)
	}
	return path
}

// page is a browser tab on the dashboard.
type page struct {
	t   *testing.T
	ctx context.Context
	run *localRun
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](p *page, js string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js))
}

// waitJS waits until the JavaScript expression is true in the page, and
// returns how long that took; after d it fails the test.
func (p *page) waitJS(what, js string, d time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	for {
		ok, err := eval[bool](p, "!!("+js+")")
		if err == nil && ok {
			return time.Since(start)
		}
		if time.Since(start) > d {
			html, _ := eval[string](p, `document.querySelector("#live") ? document.querySelector("#live").innerText : document.body.innerText`)
			p.run.cmd.Process.Kill()
			p.t.Fatalf("%s: not within %v (last error %v); the page says:\n%s\n\ntailor local:\n%s", what, d, err, html, p.run.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *page) number(js string) int {
	p.t.Helper()
	n, err := eval[int](p, js)
	if err != nil {
		p.t.Fatalf("%s: %v", js, err)
	}
	return n
}

func (p *page) text(js string) string {
	p.t.Helper()
	s, err := eval[string](p, js)
	if err != nil {
		p.t.Fatalf("%s: %v", js, err)
	}
	return s
}

// TestDashboardBrowser drives headless chromium against the dashboard of
// a real `tailor local` run (3 workers, 2 parameter servers, a standby):
// the page updates itself and its curves advance; a worker killed with
// SIGKILL shows as lost within 5 s, and its death is in the event log;
// after the leader is killed the page names the new leader and the event
// log the failover. With TAILOR_DASHBOARD_SCREENSHOT=FILE it saves a
// screenshot of the live run there (docs/dashboard.png is one).
func TestDashboardBrowser(t *testing.T) {
	browser := chromium(t)
	bin := buildTailor(t)
	data := testShards(t, 24)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := startLocal(t, ctx, bin, nil, "--out", out, "--data", data, "--workers", "3", "--ps", "2", "--standby",
		"--epochs", "40", "--batch", "8", "--dashboard", "127.0.0.1:0")
	url := r.waitFor(regexp.MustCompile(`dashboard: (http://127\.0\.0\.1:\d+/)`), time.Minute)[1]

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1400, 1500))
	actx, stopAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer stopAlloc()
	bctx, stopBrowser := chromedp.NewContext(actx)
	defer stopBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		r.cmd.Process.Kill()
		t.Fatalf("open %s: %v", url, err)
	}
	p := &page{t: t, ctx: bctx, run: r}
	// the front page opens the run's page
	p.waitJS("the run's page", `document.querySelector("#run-name") && document.querySelector("#run-name").textContent == "local"`, 10*time.Second)

	// the curves advance: the mAP chart gains points while the page is
	// open, without a reload (the page fetches its sections itself)
	const mapPoints = `document.querySelectorAll("#chart-map circle").length`
	p.waitJS("a first validated epoch", mapPoints+" >= 1", 2*time.Minute)
	first := p.number(mapPoints)
	p.waitJS("the curves advance", fmt.Sprintf("%s >= %d", mapPoints, first+2), 2*time.Minute)
	if got := p.number(`document.querySelectorAll("#chart-loss circle").length`); got < 2*(first+2) {
		t.Errorf("the loss chart has %d points, want training and validation for %d epochs", got, first+2)
	}
	p.waitJS("three workers computing", `document.querySelectorAll('tr.member[data-role="worker"][data-state="live"] .bar').length == 3`, 30*time.Second)
	for _, sel := range []string{"#labels tbody tr", "#checkpoints tbody tr", "#servers tbody tr"} {
		if n := p.number(fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)); n < 2 {
			t.Errorf("%s: %d rows, want 2 or more", sel, n)
		}
	}
	if n := p.number(`document.querySelectorAll('#events tr[data-kind="elected"]').length`); n != 1 {
		t.Errorf("%d elections in the event log, want 1", n)
	}
	if s := p.text(`document.querySelector("#pointer").textContent`); !strings.Contains(s, "step") {
		t.Errorf("the checkpoint pointer: %q", s)
	}

	// a worker killed with SIGKILL is shown lost within 5 s, and its death
	// is in the event log, with how it was noticed
	r.signal("worker --id w1", "-9")
	took := p.waitJS("w1 shown lost", `document.querySelector('tr.member[data-id="w1"][data-state="lost"]') && document.querySelector('#events tr[data-kind="lost"][data-member="w1"]')`, 20*time.Second)
	if took > 5*time.Second {
		t.Errorf("w1 was shown lost %v after SIGKILL, want within 5 s", took)
	}
	if s := p.text(`document.querySelector('#events tr[data-kind="lost"][data-member="w1"]').textContent`); !strings.Contains(s, "by gossip") && !strings.Contains(s, "by lease") && !strings.Contains(s, "by restart") {
		t.Errorf("the event log's line of w1's death does not say how it was noticed: %q", s)
	}
	t.Logf("w1 shown lost %v after SIGKILL", took.Round(100*time.Millisecond))

	// the leader is killed: the page names the standby as the new leader,
	// and the event log has the failover
	leader := p.text(`document.querySelector("#leader").textContent`)
	standby := map[string]string{"coord-a": "coord-b", "coord-b": "coord-a"}[leader]
	if standby == "" {
		r.cmd.Process.Kill()
		t.Fatalf("the page names leader %q", leader)
	}
	r.signal("coordinator --id "+leader, "-9")
	took = p.waitJS("the new leader", fmt.Sprintf(`document.querySelector("#leader").textContent == %q && document.querySelector('#events tr[data-kind="failover"][data-member=%q]')`, standby, standby), time.Minute)
	t.Logf("%s shown leading %v after %s was killed", standby, took.Round(100*time.Millisecond), leader)
	if s := p.text(fmt.Sprintf(`document.querySelector('#events tr[data-kind="failover"][data-member=%q]').textContent`, standby)); !strings.Contains(s, "leads after "+leader) {
		t.Errorf("the failover's line: %q, want it to name %s", s, leader)
	}
	p.waitJS("the curves advance after the failover", fmt.Sprintf("%s >= %d", mapPoints, p.number(mapPoints)+1), 2*time.Minute)
	if shot := os.Getenv("TAILOR_DASHBOARD_SCREENSHOT"); shot != "" {
		saveScreenshot(t, bctx, shot)
	}
	stopBrowser()
	r.wait("with the dashboard open")
}

// saveScreenshot writes a PNG of the whole page to path, after checking
// it decodes.
func saveScreenshot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(buf))
	if err != nil || cfg.Width < 1000 {
		t.Fatalf("screenshot: %v, %d px wide", err, cfg.Width)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%dx%d)", path, cfg.Width, cfg.Height)
}
