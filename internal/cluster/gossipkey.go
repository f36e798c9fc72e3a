package cluster

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// This file holds the gossip keys: reading them from a file, and keeping
// memberlist's keyring in step with the file while the member runs, so that
// the key can be rotated without a restart.

// Defaults of MembershipConfig's key settings.
const (
	DefaultKeyCheck = 2 * time.Second
	DefaultKeyGrace = time.Minute
)

// ErrKeyFile means a gossip key file does not hold what it should.
var ErrKeyFile = errors.New("cluster: gossip key file")

// ReadKeyFile reads the gossip keys in path: one hex key of 16, 24 or 32
// bytes per line (blank lines and lines starting with # are skipped). The
// first key is the primary one, which gossip is sent with; every key is
// accepted on what arrives. The error names the file, never its contents.
func ReadKeyFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	return parseKeys(b, path)
}

func parseKeys(b []byte, path string) ([][]byte, error) {
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := hex.DecodeString(line)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return nil, fmt.Errorf("%w %s, line %d: want 16, 24 or 32 hex-encoded bytes", ErrKeyFile, path, i+1)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w %s: no key", ErrKeyFile, path)
	}
	return keys, nil
}

// keyring makes memberlist's keyring of the keys (the first is primary).
func keyring(keys [][]byte) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	return memberlist.NewKeyring(keys[1:], keys[0])
}

// watchKeys keeps ring in step with the file until ctx ends: every check
// it reads the file and, if it changed, installs its keys and makes the
// first one primary; a key no longer in the file is still accepted for
// grace, then removed. A file that does not read or parse is logged and
// changes nothing. Membership.Leave stops it.
func (m *Membership) watchKeys(ctx context.Context, ring *memberlist.Keyring, path string, check, grace time.Duration) {
	defer m.viewWG.Done()
	t := time.NewTicker(check)
	defer t.Stop()
	last, _ := os.ReadFile(path)
	dropped := map[string]time.Time{} // hex key → when it goes
	var failed []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for k, at := range dropped {
			if now.After(at) {
				key, _ := hex.DecodeString(k)
				if err := ring.RemoveKey(key); err == nil {
					m.log.Info("old gossip key removed", "file", path)
				}
				delete(dropped, k)
			}
		}
		b, err := os.ReadFile(path)
		if err != nil || bytes.Equal(b, last) {
			if err != nil && !bytes.Equal(failed, []byte(err.Error())) {
				failed = []byte(err.Error())
				m.log.Warn("gossip key file unreadable: keeping the keys", "file", path, "err", err)
			}
			continue
		}
		keys, err := parseKeys(b, path)
		if err != nil {
			if !bytes.Equal(failed, b) {
				failed = b
				m.log.Warn("gossip key file changed but does not parse: keeping the keys", "err", err)
			}
			continue
		}
		last, failed = b, nil
		inFile := map[string]bool{}
		for _, k := range keys {
			inFile[hex.EncodeToString(k)] = true
			delete(dropped, hex.EncodeToString(k))
			if err := ring.AddKey(k); err != nil {
				m.log.Warn("gossip key not installed", "file", path, "err", err)
			}
		}
		primary := !bytes.Equal(ring.GetPrimaryKey(), keys[0])
		if err := ring.UseKey(keys[0]); err != nil {
			m.log.Warn("gossip key not made primary", "file", path, "err", err)
		}
		for _, k := range ring.GetKeys() {
			if h := hex.EncodeToString(k); !inFile[h] {
				if _, ok := dropped[h]; !ok {
					dropped[h] = now.Add(grace)
				}
			}
		}
		m.log.Info("gossip keys reloaded", "file", path, "keys", len(keys), "new_primary", primary, "dropping", len(dropped), "grace", grace)
	}
}
