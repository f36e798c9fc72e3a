package cluster_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/cluster"
	"github.com/tailorml/tailor/internal/cluster/clustertest"
)

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	a, b := strings.Repeat("ab", 16), strings.Repeat("cd", 32)
	tests := []struct {
		name, text string
		want       int // keys; 0: an error
	}{
		{"one key", a + "\n", 1},
		{"two keys, comments, blanks", "# new first\n" + b + "\n\n  " + a + "  \n", 2},
		{"empty", "\n# nothing\n", 0},
		{"not hex", "zz" + a + "\n", 0},
		{"wrong length", "abcd\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			keys, err := cluster.ReadKeyFile(path)
			if tt.want == 0 {
				if !errors.Is(err, cluster.ErrKeyFile) {
					t.Fatalf("got %d keys, %v; want ErrKeyFile", len(keys), err)
				}
				if strings.Contains(err.Error(), a[:8]) {
					t.Errorf("the error shows the key: %v", err)
				}
				return
			}
			if err != nil || len(keys) != tt.want {
				t.Fatalf("got %d keys, %v; want %d", len(keys), err, tt.want)
			}
		})
	}
}

// TestMembershipKeyRotation rotates the gossip key of two live members
// through their key files, in the three steps docs/security.md gives (add
// the new key second, move it first, drop the old one): each member picks
// up every step without a restart, neither ever sees the other fail, a
// member with only the new key joins them afterwards and one with only
// the old key cannot.
func TestMembershipKeyRotation(t *testing.T) {
	ep := clustertest.Etcd(t)
	dir := t.TempDir()
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	write := func(path string, keys ...[]byte) {
		t.Helper()
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(hex.EncodeToString(k) + "\n")
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	files := []string{filepath.Join(dir, "c.key"), filepath.Join(dir, "p.key")}
	for _, f := range files {
		write(f, oldKey)
	}
	// the members log to a buffer, shown if the test fails: memberlist may
	// still log (packets of the member with the dropped key) as the test
	// ends, when t.Log no longer may be called
	var logs lockedBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the members' logs:\n%s", logs.String())
		}
	})
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	withFile := func(f string) func(*cluster.MembershipConfig) {
		return func(c *cluster.MembershipConfig) {
			c.KeyFile, c.KeyCheck, c.KeyGrace, c.Log = f, 50*time.Millisecond, 300*time.Millisecond, lg
		}
	}
	c := join(t, ep, cluster.RoleCoordinator, "c1", withFile(files[0]))
	p := join(t, ep, cluster.RoleParamServer, "p1", withFile(files[1]))
	both := []string{"coordinator/c1", "paramserver/p1"}
	waitFor(t, 5*time.Second, "the two members to see each other", seesAll(both, c, p))
	recC, recP := record(t, c), record(t, p)

	hasKeys := func(want ...[]byte) func() bool {
		return func() bool {
			for _, m := range []*cluster.Membership{c, p} {
				got := m.GossipKeys()
				if len(got) != len(want) {
					return false
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						return false
					}
				}
			}
			return true
		}
	}
	steps := []struct {
		what string
		file [][]byte // the key file's lines
		want [][]byte // the keyrings then, primary first
	}{
		{"the new key accepted", [][]byte{oldKey, newKey}, [][]byte{oldKey, newKey}},
		{"the new key sent with", [][]byte{newKey, oldKey}, [][]byte{newKey, oldKey}},
		{"the old key dropped", [][]byte{newKey}, [][]byte{newKey}},
	}
	for _, s := range steps {
		// one member first, then the other, as a rollout does
		write(files[0], s.file...)
		time.Sleep(100 * time.Millisecond)
		write(files[1], s.file...)
		waitFor(t, 5*time.Second, s.what, hasKeys(s.want...))
		if !seesAll(both, c, p)() {
			t.Fatalf("after %q: the members do not see each other: %v, %v", s.what, ids(c.Members("")), ids(p.Members("")))
		}
	}
	// gossip is really on the new key: a member with only it joins, one
	// with only the old key cannot
	w := join(t, ep, cluster.RoleWorker, "w1", func(cfg *cluster.MembershipConfig) { cfg.SecretKey, cfg.Log = newKey, lg })
	waitFor(t, 5*time.Second, "a member with the new key to be seen", seesAll(append(both, "worker/w1"), c, p, w))
	jctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := cluster.Join(jctx, cluster.MembershipConfig{Client: clustertest.Client(t, ep), Keys: cluster.RunKeys("test"),
		Self: cluster.Member{ID: "w2", Role: cluster.RoleWorker}, TTL: testTTL, FastFailure: true, SecretKey: oldKey, Log: lg}); !errors.Is(err, cluster.ErrGossipJoin) {
		t.Errorf("a member with the dropped key: Join = %v, want ErrGossipJoin", err)
	}
	for _, r := range []*recorder{recC, recP} {
		for _, id := range []string{"c1", "p1"} {
			if e, ok := r.find(cluster.EventFailed, id); ok {
				t.Errorf("%s was seen to fail during the rotation: %+v", id, e)
			}
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
