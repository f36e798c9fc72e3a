package coordinator

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/tailorml/tailor/shard"
)

func testManifest() *shard.Manifest {
	return &shard.Manifest{Splits: []shard.Split{{Name: "train", Records: 1030, Shards: []shard.ShardInfo{
		{Name: "shards/train-00000.shard", Records: 600, FirstID: 0},
		{Name: "shards/train-00001.shard", Records: 430, FirstID: 600},
	}}}}
}

func TestUnits(t *testing.T) {
	us, err := Units(testManifest(), "train", 256)
	if err != nil {
		t.Fatal(err)
	}
	want := []int{256, 256, 88, 256, 174}
	if len(us) != len(want) {
		t.Fatalf("%d units, want %d", len(us), len(want))
	}
	seen := map[uint64]bool{}
	for i, u := range us {
		if u.Len != want[i] || u.ID != i {
			t.Errorf("unit %d: %+v, want len %d", i, u, want[i])
		}
		for j := 0; j < u.Len; j++ {
			id := u.RecordID(j)
			if seen[id] {
				t.Fatalf("record %d in two units", id)
			}
			seen[id] = true
		}
	}
	if len(seen) != 1030 {
		t.Errorf("units cover %d records, want 1030", len(seen))
	}
	if _, err := Units(testManifest(), "train", 0); err == nil {
		t.Error("unit size 0 accepted")
	}
	if _, err := Units(testManifest(), "nope", 10); !errors.Is(err, shard.ErrUnknownSplit) {
		t.Errorf("unknown split: %v", err)
	}
}

func TestGlobalUnits(t *testing.T) {
	a, err := GlobalUnits(testManifest(), "train", 3, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GlobalUnits(testManifest(), "train", 3, 1, 100)
	if len(a) != 11 || a[10].Len != 30 {
		t.Fatalf("%d units, last of %d: want 11, last of 30", len(a), a[len(a)-1].Len)
	}
	seen := map[uint64]bool{}
	same := true
	for i, u := range a {
		if u.ID != i || len(u.IDs) != u.Len {
			t.Fatalf("unit %d: %+v", i, u)
		}
		for j := range u.Len {
			if seen[u.RecordID(j)] || u.RecordID(j) >= 1030 {
				t.Fatalf("record %d twice or out of the split", u.RecordID(j))
			}
			seen[u.RecordID(j)] = true
			same = same && u.RecordID(j) == b[i].RecordID(j)
		}
		if o := u.RecordOrder(3, 0); o[0] != 0 || o[len(o)-1] != u.Len-1 {
			t.Errorf("global unit visited out of order: %v", o)
		}
	}
	if len(seen) != 1030 {
		t.Errorf("cover %d records, want 1030", len(seen))
	}
	if same {
		t.Error("two epochs, one permutation")
	}
	if o := handOrder(a, 3, 0); o[0] != 0 || o[10] != 10 {
		t.Errorf("global units handed out of order: %v", o)
	}
	if _, err := GlobalUnits(testManifest(), "train", 3, 0, 0); err == nil {
		t.Error("unit size 0 accepted")
	}
	if _, err := GlobalUnits(testManifest(), "nope", 3, 0, 10); !errors.Is(err, shard.ErrUnknownSplit) {
		t.Errorf("unknown split: %v", err)
	}
}

// A randomised epoch with workers that die mid-unit and workers that join:
// at the end every record was consumed exactly once.
func TestLedgerExactlyOnce(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		us, _ := Units(testManifest(), "train", 64)
		l := NewLedger(us, seed, 3)
		rng := rand.New(rand.NewPCG(seed, 1))
		consumed := map[uint64]int{}
		type hold struct {
			unit Unit
			pos  int
		}
		workers := map[string]*hold{"w0": nil, "w1": nil, "w2": nil}
		nextID := 3
		for steps := 0; !l.Done(); steps++ {
			if steps > 10000 {
				t.Fatal("epoch never ends")
			}
			// pick a worker
			names := []string{}
			for w := range workers {
				names = append(names, w)
			}
			sortStrings(names)
			w := names[rng.IntN(len(names))]
			switch r := rng.Float64(); {
			case r < 0.03 && len(workers) > 1: // dies: its applied batches stay applied
				delete(workers, w)
				l.Release(w)
				continue
			case r < 0.06: // a new worker joins
				workers[string(rune('a'+nextID))] = nil
				nextID++
				continue
			}
			h := workers[w]
			if h == nil {
				u, pos, err := l.Assign(w)
				if errors.Is(err, ErrEpochEnded) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				h = &hold{u, pos}
				workers[w] = h
			}
			// one batch of up to 16 records, applied, then reported
			order := h.unit.RecordOrder(seed, 3)
			end := min(h.pos+16, h.unit.Len)
			for _, i := range order[h.pos:end] {
				consumed[h.unit.RecordID(i)]++
			}
			if err := l.Progress(w, h.unit.ID, end); err != nil {
				t.Fatal(err)
			}
			h.pos = end
			if end == h.unit.Len {
				workers[w] = nil
			}
		}
		if len(consumed) != 1030 {
			t.Fatalf("seed %d: %d distinct records consumed, want 1030", seed, len(consumed))
		}
		for id, n := range consumed {
			if n != 1 {
				t.Fatalf("seed %d: record %d consumed %d times", seed, id, n)
			}
		}
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestLedgerErrors(t *testing.T) {
	us, _ := Units(testManifest(), "train", 512)
	l := NewLedger(us, 1, 0)
	u, pos, err := l.Assign("a")
	if err != nil || pos != 0 {
		t.Fatal(err, pos)
	}
	if err := l.Progress("b", u.ID, 10); !errors.Is(err, ErrNotOwner) {
		t.Errorf("progress by a non-owner: %v", err)
	}
	if err := l.Progress("a", u.ID, 10); err != nil {
		t.Fatal(err)
	}
	if err := l.Progress("a", u.ID, 5); !errors.Is(err, ErrBadCursor) {
		t.Errorf("progress backwards: %v", err)
	}
	if err := l.Progress("a", u.ID, u.Len+1); !errors.Is(err, ErrBadCursor) {
		t.Errorf("progress past the end: %v", err)
	}
	if got := l.Release("a"); len(got) != 1 || got[0] != u.ID {
		t.Errorf("release: %v", got)
	}
	u2, pos2, err := l.Assign("c")
	if err != nil || u2.ID != u.ID || pos2 != 10 {
		t.Errorf("released unit not resumed at 10: unit %d pos %d err %v", u2.ID, pos2, err)
	}
}
