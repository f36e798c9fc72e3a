package coordinator

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"

	"github.com/tailorml/tailor/input"
)

// Sync epochs with deaths, joins and late workers: every record is consumed
// exactly once, and each step's batches are disjoint.
func TestSchedulerExactlyOnce(t *testing.T) {
	for _, plan := range []string{"units", "global"} {
		t.Run(plan, func(t *testing.T) { testSchedulerExactlyOnce(t, plan) })
	}
}

func testSchedulerExactlyOnce(t *testing.T, plan string) {
	for seed := uint64(0); seed < 30; seed++ {
		us, _ := Units(testManifest(), "train", 100)
		if plan == "global" {
			us, _ = GlobalUnits(testManifest(), "train", seed, 1, 16)
		}
		s := NewScheduler(us, seed, 1, 16, 0)
		rng := rand.New(rand.NewPCG(seed, 9))
		live := map[string]bool{"w0": true, "w1": true, "w2": true}
		next := 3
		consumed := map[uint64]int{}
		for steps := 0; !s.Done(); steps++ {
			if steps > 5000 {
				t.Fatalf("seed %d: epoch never ends", seed)
			}
			var ws []string
			for w := range live {
				ws = append(ws, w)
			}
			sort.Strings(ws)
			res, err := s.Begin(ws)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[uint64]bool{}
			var included []string
			for _, b := range res {
				for _, id := range b.IDs {
					if seen[id] {
						t.Fatalf("record %d twice in step %d", id, b.Step)
					}
					seen[id] = true
				}
				switch r := rng.Float64(); {
				case r < 0.04 && len(live) > 1: // dies mid-step, before its push completed
					delete(live, b.Worker)
					s.Drop(b.Worker)
				case r < 0.06 && len(live) > 1: // dies after its push completed: still included
					delete(live, b.Worker)
					s.Drop(b.Worker)
					included = append(included, b.Worker)
				case r < 0.10: // late: excluded by the decision
				default:
					included = append(included, b.Worker)
				}
			}
			if rng.Float64() < 0.03 {
				live[string(rune('a'+next))] = true
				next++
			}
			done, err := s.Decide(s.Step(), included)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range done {
				for _, id := range b.IDs {
					consumed[id]++
				}
			}
		}
		if len(consumed) != 1030 {
			t.Fatalf("seed %d: %d records consumed, want 1030", seed, len(consumed))
		}
		for id, n := range consumed {
			if n != 1 {
				t.Fatalf("seed %d: record %d consumed %d times", seed, id, n)
			}
		}
	}
}

func TestSchedulerErrors(t *testing.T) {
	us, _ := Units(testManifest(), "train", 100)
	s := NewScheduler(us, 1, 0, 8, 5)
	if _, err := s.Decide(5, nil); err != ErrNoStep {
		t.Errorf("decide without a step: %v", err)
	}
	res, err := s.Begin([]string{"b", "a"})
	if err != nil || len(res) != 2 || res[0].Worker != "a" || res[0].Step != 5 {
		t.Fatalf("begin: %+v %v", res, err)
	}
	if _, err := s.Begin([]string{"a"}); err != ErrStepOpen {
		t.Errorf("second begin: %v", err)
	}
	if _, err := s.Decide(6, nil); err == nil {
		t.Error("decision for another step accepted")
	}
	if _, err := s.Decide(5, []string{"zz"}); err == nil {
		t.Error("non-participant included")
	}
	// the records are the unit's
	for _, b := range res {
		u := us[b.Unit]
		for _, id := range b.IDs {
			if first := u.FirstID + uint64(u.Offset); id < first || id >= first+uint64(u.Len) {
				t.Errorf("record %d is not in unit %+v", id, u)
			}
		}
	}
}

// With the global plan, a sync step of N workers at batch B trains exactly
// the single-process trainer's batch of N·B at the same step, the last,
// short one included: the participants' batches, in worker order, are the
// consecutive pieces of input.Order.
func TestGlobalPlanIsOneProcess(t *testing.T) {
	const seed, batch, n = 7, 16, 1030
	for _, workers := range []int{1, 3, 4} {
		for epoch := range 2 {
			us, err := GlobalUnits(testManifest(), "train", seed, epoch, batch)
			if err != nil {
				t.Fatal(err)
			}
			var ws []string
			for i := range workers {
				ws = append(ws, fmt.Sprintf("w%d", i))
			}
			order := input.Order(n, seed, epoch)
			s := NewScheduler(us, seed, epoch, batch, 0)
			for step := 0; !s.Done(); step++ {
				res, err := s.Begin(ws)
				if err != nil {
					t.Fatal(err)
				}
				var got []uint64
				var included []string
				for _, b := range res {
					if b.Offset != len(got) {
						t.Fatalf("step %d: %s's batch at offset %d, want %d", step, b.Worker, b.Offset, len(got))
					}
					got = append(got, b.IDs...)
					included = append(included, b.Worker)
				}
				g := workers * batch
				var want []uint64
				for _, i := range order[step*g : min((step+1)*g, n)] {
					want = append(want, uint64(i)) // the split's first ID is 0
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%d workers, epoch %d, step %d: batch %v, want %v", workers, epoch, step, got, want)
				}
				if _, err := s.Decide(int64(step), included); err != nil {
					t.Fatal(err)
				}
			}
			if steps := s.Step(); steps != int64((n+workers*batch-1)/(workers*batch)) {
				t.Errorf("%d workers: %d steps", workers, steps)
			}
		}
	}
}

// Async: workers ask at their own pace, some pushes fail, some workers die
// between steps. Every record is consumed at least once; only a worker that
// died after a successful push but before asking again repeats a batch.
func TestAsyncScheduler(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		us, _ := Units(testManifest(), "train", 100)
		s := NewAsyncScheduler(us, seed, 2, 16, nil)
		rng := rand.New(rand.NewPCG(seed, 3))
		type state struct {
			b    Batch
			have bool
			done int64
		}
		ws := map[string]*state{"w0": {done: -1}, "w1": {done: -1}, "w2": {done: -1}}
		consumed := map[uint64]int{}
		repeatsAllowed := 0
		lastStep := map[string]int64{}
		for n := 0; !s.Done(); n++ {
			if n > 20000 {
				t.Fatal("epoch never ends")
			}
			var names []string
			for w := range ws {
				names = append(names, w)
			}
			sort.Strings(names)
			w := names[rng.IntN(len(names))]
			st := ws[w]
			if st.have {
				switch r := rng.Float64(); {
				case r < 0.1: // push refused: not applied
				case r < 0.13 && len(ws) > 1: // pushed (applied), then died before asking again
					for _, id := range st.b.IDs {
						consumed[id]++
					}
					repeatsAllowed += len(st.b.IDs)
					s.Drop(w)
					delete(ws, w)
					ws[w+"x"] = &state{done: -1}
					continue
				default: // applied
					for _, id := range st.b.IDs {
						consumed[id]++
					}
					st.done = st.b.Step
				}
			}
			b, ok, err := s.Next(w, st.done)
			if err != nil {
				t.Fatal(err)
			}
			st.have = ok
			if ok {
				if last, seen := lastStep[w]; seen && b.Step <= last {
					t.Fatalf("worker %s got step %d after %d", w, b.Step, last)
				}
				lastStep[w] = b.Step
				st.b = b
			}
		}
		extra := 0
		for _, n := range consumed {
			if n < 1 {
				t.Fatal("a record never consumed")
			}
			extra += n - 1
		}
		if len(consumed) != 1030 {
			t.Fatalf("seed %d: %d records consumed, want 1030", seed, len(consumed))
		}
		if extra > repeatsAllowed {
			t.Fatalf("seed %d: %d repeats, only %d from dead workers' last batches", seed, extra, repeatsAllowed)
		}
	}
}

// A sync scheduler exported between steps and restored continues with the
// very same batches; restored for another worker set, it still consumes
// every record of the epoch exactly once.
func TestSchedulerExportRestore(t *testing.T) {
	us, _ := Units(testManifest(), "train", 100)
	ws := []string{"w0", "w1", "w2"}
	run := func(s *Scheduler, ws []string, steps int, consumed map[uint64]int) [][]Batch {
		var out [][]Batch
		for i := 0; i < steps && !s.Done(); i++ {
			res, err := s.Begin(ws)
			if err != nil {
				t.Fatal(err)
			}
			var inc []string
			for _, b := range res {
				inc = append(inc, b.Worker)
			}
			done, err := s.Decide(s.Step(), inc)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range done {
				for _, id := range b.IDs {
					consumed[id]++
				}
			}
			out = append(out, res)
		}
		return out
	}
	orig := NewScheduler(us, 7, 2, 16, 0)
	consumed := map[uint64]int{}
	run(orig, ws, 10, consumed)
	st, err := orig.Export()
	if err != nil {
		t.Fatal(err)
	}
	// through JSON, as in a checkpoint
	b, _ := json.Marshal(st)
	var back SchedState
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	restored, err := RestoreScheduler(us, 7, 16, back)
	if err != nil {
		t.Fatal(err)
	}
	a := run(orig, ws, 5, map[uint64]int{})
	r := run(restored, ws, 5, map[uint64]int{})
	if !reflect.DeepEqual(a, r) {
		t.Fatalf("restored scheduler diverges:\n%v\n%v", a, r)
	}

	// resume with w1 gone and w3 new: its units go back to the pool
	other, err := RestoreScheduler(us, 7, 16, back)
	if err != nil {
		t.Fatal(err)
	}
	other.Drop("w1")
	run(other, []string{"w0", "w2", "w3"}, 1<<20, consumed)
	if !other.Done() {
		t.Fatal("epoch not finished")
	}
	total := 0
	for _, u := range us {
		total += u.Len
	}
	if len(consumed) != total {
		t.Errorf("%d records consumed, want %d", len(consumed), total)
	}
	for id, n := range consumed {
		if n != 1 {
			t.Fatalf("record %d consumed %d times", id, n)
		}
	}
	if _, err := RestoreScheduler(us[:3], 7, 16, back); err == nil {
		t.Error("restored a ledger onto other units")
	}
}

// Async with a cut every k batches: after the k-th new batch the scheduler
// hands out nothing new, still re-issues a batch whose push was refused,
// and reaches a cut once every batch out is reported or its worker
// dropped. A scheduler exported at a cut and restored (as a resume does,
// sometimes without one of the workers) goes on so that every record of
// the epoch is consumed exactly once.
func TestAsyncSchedulerCuts(t *testing.T) {
	us, _ := Units(testManifest(), "train", 100)
	total := 0
	for _, u := range us {
		total += u.Len
	}
	for _, c := range []struct {
		name        string
		every       int
		refuse, die float64
	}{
		{"every 1", 1, 0, 0},
		{"every 4", 4, 0.1, 0},
		{"every 7 with deaths", 7, 0.1, 0.02},
	} {
		t.Run(c.name, func(t *testing.T) {
			for seed := uint64(0); seed < 10; seed++ {
				s := NewAsyncScheduler(us, seed, 1, 16, nil)
				s.CutEvery(c.every)
				rng := rand.New(rand.NewPCG(seed, 5))
				type state struct {
					b    Batch
					have bool
					done int64
				}
				ws := map[string]*state{"w0": {done: -1}, "w1": {done: -1}, "w2": {done: -1}}
				consumed := map[uint64]int{}
				cuts, handed, next := 0, 0, 3
				for n := 0; !s.Done(); n++ {
					if n > 50000 {
						t.Fatal("epoch never ends")
					}
					if s.AtCut() {
						if handed != c.every {
							t.Fatalf("seed %d: cut after %d new batches, want %d", seed, handed, c.every)
						}
						st, err := s.Export()
						if err != nil {
							t.Fatalf("seed %d: export at a cut: %v", seed, err)
						}
						b, _ := json.Marshal(st)
						var back SchedState
						if err := json.Unmarshal(b, &back); err != nil {
							t.Fatal(err)
						}
						if s, err = RestoreAsyncScheduler(us, seed, 16, back); err != nil {
							t.Fatal(err)
						}
						s.CutEvery(c.every)
						if rng.Float64() < 0.3 && len(ws) > 1 { // resumed without a worker
							for w := range ws {
								s.Drop(w)
								delete(ws, w)
								break
							}
						}
						for _, st := range ws { // a resume starts a new generation
							st.done = -1
						}
						cuts, handed = cuts+1, 0
						continue
					}
					var names []string
					for w := range ws {
						names = append(names, w)
					}
					sort.Strings(names)
					w := names[rng.IntN(len(names))]
					st := ws[w]
					if st.have {
						switch r := rng.Float64(); {
						case r < c.refuse: // push refused: not applied
						case r < c.refuse+c.die && len(ws) > 1: // died before its push was applied
							s.Drop(w)
							delete(ws, w)
							ws[fmt.Sprint("n", next)] = &state{done: -1}
							next++
							continue
						default:
							for _, id := range st.b.IDs {
								consumed[id]++
							}
							st.done = st.b.Step
						}
					}
					pausing, held := s.Pausing(), st.have && st.done < st.b.Step
					b, ok, err := s.Next(w, st.done)
					if err != nil {
						t.Fatal(err)
					}
					switch {
					case ok && pausing && !held:
						t.Fatalf("seed %d: a new batch for %s while pausing for a cut", seed, w)
					case ok && held && !reflect.DeepEqual(b.IDs, st.b.IDs):
						t.Fatalf("seed %d: a refused batch came back with other records", seed)
					case ok && !held:
						handed++
					}
					st.have = ok
					if ok {
						st.b = b
					}
				}
				if cuts == 0 {
					t.Fatalf("seed %d: no cut in the epoch", seed)
				}
				if len(consumed) != total {
					t.Fatalf("seed %d: %d records consumed, want %d", seed, len(consumed), total)
				}
				for id, n := range consumed {
					if n != 1 {
						t.Fatalf("seed %d: record %d consumed %d times", seed, id, n)
					}
				}
			}
		})
	}
}

// A scheduler without cuts never pauses; Export fails while a batch is out.
func TestAsyncSchedulerNoCuts(t *testing.T) {
	us, _ := Units(testManifest(), "train", 100)
	s := NewAsyncScheduler(us, 1, 0, 16, nil)
	for range 100 {
		if _, ok, err := s.Next("w0", -1); !ok || err != nil {
			t.Fatalf("next: %v, %v", ok, err)
		}
		if s.Pausing() || s.AtCut() {
			t.Fatal("pausing without CutEvery")
		}
		s.Drop("w0")
	}
	if _, ok, _ := s.Next("w0", -1); !ok {
		t.Fatal("no batch")
	}
	if _, err := s.Export(); err == nil {
		t.Error("exported with a batch out")
	}
}

// CutNow (a preemption's checkpoint) pauses a scheduler without cuts as
// soon as the batches out are back; Resume hands out batches again.
func TestAsyncSchedulerCutNow(t *testing.T) {
	us, _ := Units(testManifest(), "train", 100)
	s := NewAsyncScheduler(us, 1, 0, 16, nil)
	b0, ok, err := s.Next("w0", -1)
	if !ok || err != nil {
		t.Fatalf("next: %v, %v", ok, err)
	}
	s.CutNow()
	if !s.Pausing() || s.AtCut() {
		t.Fatalf("after CutNow with a batch out: pausing %v, at a cut %v; want pausing, not at a cut", s.Pausing(), s.AtCut())
	}
	if _, ok, _ := s.Next("w1", -1); ok {
		t.Fatal("a new batch handed out after CutNow")
	}
	// w0 reports its batch: nothing is out, the cut is here
	if _, ok, _ := s.Next("w0", b0.Step); ok {
		t.Fatal("a new batch handed out with the report, after CutNow")
	}
	if !s.AtCut() {
		t.Fatal("no cut once the batch out was reported")
	}
	if _, err := s.Export(); err != nil {
		t.Fatalf("export at the cut: %v", err)
	}
	s.Resume()
	if s.Pausing() {
		t.Fatal("pausing after Resume")
	}
	if _, ok, _ := s.Next("w1", -1); !ok {
		t.Fatal("no batch after Resume")
	}
}
