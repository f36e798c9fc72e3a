package dashboard

import (
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/coordinator"
	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/runstatus"
)

// The members table: live members with their lease and gossip contact, a
// member whose death was seen but whose record is still in etcd shown
// lost, a dead incarnation of a member that came back shown as a lost row
// of its own, deaths seen by gossip then the lease as one row, and old
// deaths left out.
func TestMembersTable(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(secs int) time.Time { return now.Add(time.Duration(secs) * time.Second) }
	worker := func(id string) runstatus.Member {
		return runstatus.Member{Role: cluster.RoleWorker, ID: id, Addrs: map[string]string{"metrics": "127.0.0.1:1" + id[1:]}}
	}
	ev := func(seq int64, secs int, kind, id, by string) coordinator.Event {
		return coordinator.Event{Seq: seq, At: at(secs), Kind: kind, Role: "worker", Member: id, By: by}
	}
	type row struct{ id, state, by string }
	for _, c := range []struct {
		name    string
		members []runstatus.Member
		events  []coordinator.Event
		want    []row
	}{
		{"all live", []runstatus.Member{worker("w0"), worker("w1")}, nil,
			[]row{{"w0", "live", ""}, {"w1", "live", ""}}},
		{"seen dead by gossip, record not expired yet", []runstatus.Member{worker("w0"), worker("w1")},
			[]coordinator.Event{ev(1, -3, coordinator.EventLost, "w1", coordinator.ByGossip)},
			[]row{{"w0", "live", ""}, {"w1", "lost", "gossip"}}},
		{"gone: gossip then lease, one row with the first detection", []runstatus.Member{worker("w0")},
			[]coordinator.Event{ev(1, -5, coordinator.EventLost, "w1", coordinator.ByGossip), ev(2, -3, coordinator.EventLost, "w1", coordinator.ByLease)},
			[]row{{"w0", "live", ""}, {"w1", "lost", "gossip"}}},
		{"came back: live row and the dead incarnation", []runstatus.Member{worker("w0"), worker("w1")},
			[]coordinator.Event{ev(1, -30, coordinator.EventJoined, "w1", ""), ev(2, -5, coordinator.EventLost, "w1", coordinator.ByGossip),
				ev(3, -4, coordinator.EventLost, "w1", coordinator.ByLease), ev(4, -2, coordinator.EventJoined, "w1", "")},
			[]row{{"w0", "live", ""}, {"w1", "live", ""}, {"w1", "lost", "gossip"}}},
		{"died twice", []runstatus.Member{worker("w0")},
			[]coordinator.Event{ev(1, -50, coordinator.EventLost, "w1", coordinator.ByLease), ev(2, -40, coordinator.EventJoined, "w1", ""),
				ev(3, -5, coordinator.EventLost, "w1", coordinator.ByLease)},
			[]row{{"w0", "live", ""}, {"w1", "lost", "lease"}, {"w1", "lost", "lease"}}},
		{"left cleanly, record still there", []runstatus.Member{worker("w0")},
			[]coordinator.Event{ev(1, -1, coordinator.EventLeft, "w0", "")},
			[]row{{"w0", "left", ""}}},
		{"an old death is not shown", []runstatus.Member{worker("w0")},
			[]coordinator.Event{ev(1, -int(LostShown/time.Second)-1, coordinator.EventLost, "w1", coordinator.ByLease)},
			[]row{{"w0", "live", ""}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			col := &collector{}
			st := runstatus.View{Members: c.members}
			rows := col.members("r", st, map[string]int64{"worker/w0": 2}, c.events, now)
			var got []row
			for _, r := range rows {
				got = append(got, row{r.ID, r.State, r.LostBy})
			}
			if len(got) != len(c.want) {
				t.Fatalf("rows %v, want %v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Errorf("row %d = %v, want %v (all: %v)", i, got[i], c.want[i], got)
				}
			}
			if rows[0].LeaseTTL != 2 {
				t.Errorf("w0's lease TTL %d, want 2", rows[0].LeaseTTL)
			}
		})
	}
}

// A worker well below the median of the workers' images per second is a
// straggler; with fewer than two rates, nobody is.
func TestStragglers(t *testing.T) {
	for _, c := range []struct {
		rates []float64
		want  []bool
	}{
		{[]float64{100, 100, 100}, []bool{false, false, false}},
		{[]float64{100, 98, 60}, []bool{false, false, true}},
		{[]float64{100, 71}, []bool{false, false}}, // median 85.5: 71 > 59.85
		{[]float64{100, 40}, []bool{false, true}},  // median 70: 40 < 49
		{[]float64{100}, []bool{false}},
		{[]float64{100, 0, 90}, []bool{false, false, false}}, // no rate yet: not judged
	} {
		rows := make([]MemberRow, len(c.rates))
		for i, r := range c.rates {
			rows[i] = MemberRow{Role: "worker", State: "live", ImgPerSec: r}
		}
		flagStragglers(rows)
		for i := range rows {
			if rows[i].Straggler != c.want[i] {
				t.Errorf("rates %v: worker %d straggler %v, want %v", c.rates, i, rows[i].Straggler, c.want[i])
			}
		}
	}
}

// A worker's rate is the images between two samples at least a second
// apart, over the time between them; a restarted worker (fewer images)
// starts afresh.
func TestWorkerRate(t *testing.T) {
	col := &collector{}
	t0 := time.Now()
	for _, c := range []struct {
		images float64
		at     time.Duration
		want   float64
	}{
		{100, 0, 0},
		{150, 500 * time.Millisecond, 0}, // too soon: the previous rate
		{300, 2 * time.Second, 100},
		{300, 2500 * time.Millisecond, 100},
		{20, 5 * time.Second, 0}, // restarted
		{120, 7 * time.Second, 50},
	} {
		if got := col.rate("r", "w0@a", c.images, t0.Add(c.at)); got != c.want {
			t.Errorf("%v images at %v: rate %v, want %v", c.images, c.at, got, c.want)
		}
	}
}

func TestETA(t *testing.T) {
	for _, c := range []struct {
		name string
		p    coordinator.Progress
		want float64
	}{
		{"mid-run", coordinator.Progress{Epoch: 2, Epochs: 4, Images: 50, EpochImages: 100, EpochImgPerSec: 10}, 25}, // 50 + 2×100 images at 10/s
		{"last epoch", coordinator.Progress{Epoch: 4, Epochs: 4, Images: 100, EpochImages: 100, EpochImgPerSec: 10}, 0},
		{"no rate yet", coordinator.Progress{Epoch: 1, Epochs: 4, EpochImages: 100}, 0},
		{"interval rate only", coordinator.Progress{Epoch: 1, Epochs: 2, Images: 0, EpochImages: 100, ImgPerSec: 20}, 10},
		{"done", coordinator.Progress{Epoch: 4, Epochs: 4, EpochImages: 100, EpochImgPerSec: 10, Done: true}, 0},
	} {
		if got := eta(&c.p); got != c.want {
			t.Errorf("%s: eta %v, want %v", c.name, got, c.want)
		}
	}
}

func TestHistogramSumCount(t *testing.T) {
	text := `# HELP tailor_ps_staleness Async/SSP: updates applied.
# TYPE tailor_ps_staleness histogram
tailor_ps_staleness_bucket{run="r",server="0",le="0"} 3
tailor_ps_staleness_bucket{run="r",server="0",le="+Inf"} 10
tailor_ps_staleness_sum{run="r",server="0"} 14
tailor_ps_staleness_count{run="r",server="0"} 10
tailor_ps_staleness_summary_sum 99
tailor_ps_update_seconds_sum{run="r",server="0"} 1.5
`
	sum, n, err := histogramSumCount(strings.NewReader(text), "tailor_ps_staleness")
	if err != nil || sum != 14 || n != 10 {
		t.Errorf("sum %v, count %v, err %v; want 14, 10, nil", sum, n, err)
	}
}

// Charts: one point per epoch, and a chart of no epoch says so.
func TestChartSVG(t *testing.T) {
	h := coordinator.History{Epochs: []coordinator.EpochRecord{{Epoch: 1, TrainLoss: 0.7, ValLoss: 0.6, ValMAP: 0.4, LR: 1e-3, ImgPerSec: 100},
		{Epoch: 2, TrainLoss: 0.5, ValLoss: 0.55, ValMAP: 0.5, LR: 9e-4, ImgPerSec: 110}}}
	cs := historyCharts(h, "", "s1")
	if len(cs) != 4 {
		t.Fatalf("%d charts, want 4", len(cs))
	}
	svg := string(cs[0].SVG())
	if n := strings.Count(svg, "<circle"); n != 4 {
		t.Errorf("loss chart: %d points, want 4 (2 epochs × training, validation):\n%s", n, svg)
	}
	if !strings.Contains(svg, `id="chart-loss"`) || !strings.Contains(svg, "<polyline") {
		t.Errorf("loss chart:\n%s", svg)
	}
	empty := string(historyCharts(coordinator.History{}, "", "s1")[1].SVG())
	if !strings.Contains(empty, emptyChart) || strings.Contains(empty, "<circle") {
		t.Errorf("chart of no epoch:\n%s", empty)
	}
	for _, c := range []struct {
		v, span float64
		want    string
	}{
		{0.5, 0.4, "0.50"}, {0.123, 0.02, "0.123"}, {250, 300, "250"}, {1e-3, 1e-4, "1.0e-3"}, {9.5e-4, 1e-4, "9.5e-4"}, {1.0002e-3, 4e-5, "1.00e-3"}, {9.921e-4, 4e-5, "9.92e-4"}, {2e5, 1e5, "2.0e+5"},
	} {
		if got := tickLabel(c.v, c.span); got != c.want {
			t.Errorf("tickLabel(%v, %v) = %q, want %q", c.v, c.span, got, c.want)
		}
	}
}
