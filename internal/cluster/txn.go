package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Sentinel errors of the Txn helpers; test with errors.Is.
var (
	// ErrConflict: the key's revision (or a guard) was not what the caller
	// expected; someone else wrote first. Re-read and decide again.
	ErrConflict = errors.New("cluster: conflict")
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("cluster: key not found")
)

// KV is a key's value with its revisions.
type KV struct {
	Key       string
	Value     []byte
	ModRev    int64 // revision of the last write; 0 if absent
	CreateRev int64 // revision of the creation; 0 if absent
	Version   int64 // writes since creation; 0 if absent
}

// ConflictError is the error of a failed compare. It matches ErrConflict.
type ConflictError struct {
	Key string
	// Field is what was compared: "mod_revision" or "version".
	Field string
	// Want is the value the caller expected; Got is what the key had when
	// the Txn ran (0: absent).
	Want, Got int64
	// GuardFailed is set when the key itself matched but one of the extra
	// guards (e.g. a leader fence) did not.
	GuardFailed bool
	// Current is the key as it was when the Txn ran (Value nil if absent).
	Current KV
}

func (e *ConflictError) Error() string {
	if e.GuardFailed {
		return fmt.Sprintf("cluster: conflict on %s: guard failed (%s %d as expected)", e.Key, e.Field, e.Got)
	}
	return fmt.Sprintf("cluster: conflict on %s: %s is %d, want %d", e.Key, e.Field, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Get reads key. It returns ErrNotFound if the key does not exist.
func Get(ctx context.Context, cli *clientv3.Client, key string) (KV, error) {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return KV{}, fmt.Errorf("cluster: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return KV{Key: key}, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	kv := resp.Kvs[0]
	return KV{Key: key, Value: kv.Value, ModRev: kv.ModRevision, CreateRev: kv.CreateRevision, Version: kv.Version}, nil
}

// GetJSON reads key and decodes its JSON value into v. It returns the
// revisions to pass to CAS or CASVersion.
func GetJSON(ctx context.Context, cli *clientv3.Client, key string, v any) (KV, error) {
	kv, err := Get(ctx, cli, key)
	if err != nil {
		return kv, err
	}
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return kv, fmt.Errorf("cluster: decode %s: %w", key, err)
	}
	return kv, nil
}

// CAS writes value at key only if the key's mod revision is still
// expectedModRev (0: the key must not exist) and every guard holds (e.g.
// Term.Guard, so that a deposed leader cannot write). It returns the
// revision of the write, or a *ConflictError.
func CAS(ctx context.Context, cli *clientv3.Client, key string, expectedModRev int64, value []byte, guards ...clientv3.Cmp) (int64, error) {
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", expectedModRev)
	return casTxn(ctx, cli, key, "mod_revision", expectedModRev, cmp, clientv3.OpPut(key, string(value)), guards)
}

// CASVersion writes value at key only if the key's version (number of
// writes since creation; 0: absent) is still expectedVersion and every
// guard holds. Use it for pointers that must move one step at a time, e.g.
// the checkpoint pointer.
func CASVersion(ctx context.Context, cli *clientv3.Client, key string, expectedVersion int64, value []byte, guards ...clientv3.Cmp) (int64, error) {
	cmp := clientv3.Compare(clientv3.Version(key), "=", expectedVersion)
	return casTxn(ctx, cli, key, "version", expectedVersion, cmp, clientv3.OpPut(key, string(value)), guards)
}

// Create writes value at key only if the key does not exist and every guard
// holds.
func Create(ctx context.Context, cli *clientv3.Client, key string, value []byte, guards ...clientv3.Cmp) (int64, error) {
	return CAS(ctx, cli, key, 0, value, guards...)
}

// DeleteIf deletes key only if its mod revision is still expectedModRev and
// every guard holds.
func DeleteIf(ctx context.Context, cli *clientv3.Client, key string, expectedModRev int64, guards ...clientv3.Cmp) (int64, error) {
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", expectedModRev)
	return casTxn(ctx, cli, key, "mod_revision", expectedModRev, cmp, clientv3.OpDelete(key), guards)
}

func casTxn(ctx context.Context, cli *clientv3.Client, key, field string, want int64, cmp clientv3.Cmp, op clientv3.Op, guards []clientv3.Cmp) (int64, error) {
	cmps := append([]clientv3.Cmp{cmp}, guards...)
	resp, err := cli.Txn(ctx).If(cmps...).Then(op).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return 0, fmt.Errorf("cluster: txn on %s: %w", key, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	ce := &ConflictError{Key: key, Field: field, Want: want, Current: KV{Key: key}}
	if r := resp.Responses[0].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
		kv := r.Kvs[0]
		ce.Current = KV{Key: key, Value: kv.Value, ModRev: kv.ModRevision, CreateRev: kv.CreateRevision, Version: kv.Version}
	}
	if field == "version" {
		ce.Got = ce.Current.Version
	} else {
		ce.Got = ce.Current.ModRev
	}
	ce.GuardFailed = ce.Got == want
	return 0, ce
}
