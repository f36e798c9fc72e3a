package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tailorml/tailor/store"
)

// Format is the manifest format version this package writes and reads.
const Format = 1

// MetaName is the manifest's object name inside a checkpoint's folder.
const MetaName = "meta.json"

// maxMetaBytes bounds a manifest read from the store.
const maxMetaBytes = 64 << 20

// Meta is a checkpoint's manifest. It is written after every part blob has
// been written and verified, and names them with their digests.
type Meta struct {
	Format  int       `json:"format"`
	Run     string    `json:"run"`
	JobID   string    `json:"job_id"`
	Step    int64     `json:"step"`   // weights version (sync: steps applied)
	Epochs  int       `json:"epochs"` // epochs completed and validated
	Reason  string    `json:"reason"` // "steps" (every K), "epoch" (an epoch's end), "final"
	Created time.Time `json:"created"`
	Mode    string    `json:"mode"`
	Labels  []string  `json:"labels"`
	// Best marks a checkpoint taken right after the epoch whose model is
	// the best so far (kept by retention).
	Best  bool   `json:"best,omitempty"`
	Parts []Blob `json:"parts"`
	// Spec is the job spec; State is the coordinator's data position and
	// counters; Validator is the validation history. Their schemas belong
	// to their owners (internal/job, coordinator, train).
	Spec      json.RawMessage `json:"spec"`
	State     json.RawMessage `json:"state"`
	Validator json.RawMessage `json:"validator,omitempty"`
	// Checksum is the hex SHA-256 of the manifest encoded with Checksum
	// empty: a damaged manifest is detected even without the pointer.
	Checksum string `json:"checksum"`
}

// Blob is one parameter server's part in the store.
type Blob struct {
	Server  int    `json:"server"`
	Object  string `json:"object"` // object name, relative to the checkpoint's folder
	SHA256  string `json:"sha256"` // hex
	Bytes   int64  `json:"bytes"`
	Version int64  `json:"version"`
}

// Digest returns the blob's SHA-256.
func (b Blob) Digest() (*[32]byte, error) {
	raw, err := hex.DecodeString(b.SHA256)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("%w: blob %s: sha256 %q", ErrCorrupt, b.Object, b.SHA256)
	}
	var d [32]byte
	copy(d[:], raw)
	return &d, nil
}

// Validate checks the manifest's fields (not its checksum).
func (m *Meta) Validate() error {
	var errs []error
	if m.Format != Format {
		errs = append(errs, fmt.Errorf("format %d, want %d", m.Format, Format))
	}
	if m.Run == "" || m.JobID == "" || m.Step < 0 || m.Epochs < 0 || len(m.Parts) == 0 {
		errs = append(errs, fmt.Errorf("run %q, job %q, step %d, epochs %d, %d parts", m.Run, m.JobID, m.Step, m.Epochs, len(m.Parts)))
	}
	for i, b := range m.Parts {
		if b.Server != i {
			errs = append(errs, fmt.Errorf("part %d is of server %d", i, b.Server))
		}
		if err := store.ValidName(b.Object); err != nil || strings.Contains(b.Object, "/") {
			errs = append(errs, fmt.Errorf("part %d: object %q", i, b.Object))
		}
		if _, err := b.Digest(); err != nil {
			errs = append(errs, err)
		}
		if b.Bytes <= 0 {
			errs = append(errs, fmt.Errorf("part %d: %d bytes", i, b.Bytes))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: manifest: %w", ErrCorrupt, err)
	}
	return nil
}

// EncodeMeta sets m.Checksum and returns the manifest's bytes.
func EncodeMeta(m *Meta) ([]byte, error) {
	m.Format = Format
	m.Checksum = ""
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	m.Checksum = hex.EncodeToString(sum[:])
	return json.MarshalIndent(m, "", "  ")
}

// DecodeMeta parses a manifest and checks its checksum and fields.
func DecodeMeta(b []byte) (*Meta, error) {
	m := new(Meta)
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrCorrupt, err)
	}
	want := m.Checksum
	m.Checksum = ""
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrCorrupt, err)
	}
	sum := sha256.Sum256(raw)
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, fmt.Errorf("%w: manifest checksum %.16s…, computed %.16s… (damaged or edited)", ErrCorrupt, want, got)
	}
	m.Checksum = want
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// Location is where a run's checkpoints live: a store and a prefix in it
// ("checkpoints/" inside the shard store by default).
type Location struct {
	Store  store.Store
	Prefix string // ends with "/" or is empty
}

// RunDir is the folder of one job's checkpoints: <prefix><run>/<job id>/.
func (l Location) RunDir(run, job string) string { return l.Prefix + run + "/" + job + "/" }

// Name is a checkpoint's folder name: its step and the epochs completed,
// zero-padded so that lexical order is the order they were taken in.
func Name(step int64, epochs int) string { return fmt.Sprintf("%012d-%06d", step, epochs) }

// ParseName returns the step and epochs of a folder name made by Name.
func ParseName(name string) (step int64, epochs int, ok bool) {
	s, e, found := strings.Cut(name, "-")
	if !found || len(s) != 12 || len(e) != 6 {
		return 0, 0, false
	}
	st, err1 := strconv.ParseInt(s, 10, 64)
	ep, err2 := strconv.Atoi(e)
	if err1 != nil || err2 != nil || st < 0 || ep < 0 {
		return 0, 0, false
	}
	return st, ep, true
}

// PartObject is the object name of server i's part.
func PartObject(server int) string { return fmt.Sprintf("ps-%03d.bin", server) }

// Dir is one checkpoint's folder: the object-name prefix of its files.
func (l Location) Dir(run, job, name string) string { return l.RunDir(run, job) + name + "/" }

// List returns the names of the job's checkpoint folders that hold a
// manifest, oldest first. Folders without one are incomplete (a crash
// before the manifest was written).
func (l Location) List(ctx context.Context, run, job string) ([]string, error) {
	prefix := l.RunDir(run, job)
	objs, err := l.Store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	var names []string
	for _, o := range objs {
		rest := strings.TrimPrefix(o, prefix)
		dir, file, ok := strings.Cut(rest, "/")
		if !ok || file != MetaName {
			continue
		}
		if _, _, ok := ParseName(dir); ok {
			names = append(names, dir)
		}
	}
	sort.Strings(names)
	return names, nil
}

// Folders returns every checkpoint folder of the job, with or without a
// manifest, oldest first (for retention and rm).
func (l Location) Folders(ctx context.Context, run, job string) ([]string, error) {
	prefix := l.RunDir(run, job)
	objs, err := l.Store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	seen := map[string]bool{}
	var names []string
	for _, o := range objs {
		dir, _, ok := strings.Cut(strings.TrimPrefix(o, prefix), "/")
		if _, _, valid := ParseName(dir); ok && valid && !seen[dir] {
			seen[dir] = true
			names = append(names, dir)
		}
	}
	sort.Strings(names)
	return names, nil
}

// ReadMeta reads and checks a checkpoint's manifest.
func (l Location) ReadMeta(ctx context.Context, run, job, name string) (*Meta, error) {
	rc, err := l.Store.Get(ctx, l.Dir(run, job, name)+MetaName)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxMetaBytes+1))
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", name, err)
	}
	if len(b) > maxMetaBytes {
		return nil, fmt.Errorf("%w: checkpoint %s: manifest over %d bytes", ErrCorrupt, name, maxMetaBytes)
	}
	m, err := DecodeMeta(b)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", name, err)
	}
	if m.Run != run || m.JobID != job {
		return nil, fmt.Errorf("%w: checkpoint %s belongs to run %s job %s", ErrCorrupt, name, m.Run, m.JobID)
	}
	return m, nil
}

// WriteMeta encodes m and stores it as the folder's manifest.
func (l Location) WriteMeta(ctx context.Context, name string, m *Meta) error {
	b, err := EncodeMeta(m)
	if err != nil {
		return err
	}
	return l.Store.Put(ctx, l.Dir(m.Run, m.JobID, name)+MetaName, bytes.NewReader(b), int64(len(b)))
}

// ReadPart reads and verifies one part blob of a checkpoint against its
// manifest entry.
func (l Location) ReadPart(ctx context.Context, run, job, name string, b Blob) (*Part, error) {
	want, err := b.Digest()
	if err != nil {
		return nil, err
	}
	obj := l.Dir(run, job, name) + b.Object
	size, err := l.Store.Stat(ctx, obj)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: part %d: %w", name, b.Server, err)
	}
	if size != b.Bytes {
		return nil, fmt.Errorf("%w: checkpoint %s: part %d has %d bytes, the manifest says %d", ErrCorrupt, name, b.Server, size, b.Bytes)
	}
	rc, err := l.Store.Get(ctx, obj)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: part %d: %w", name, b.Server, err)
	}
	defer rc.Close()
	p, err := ReadPart(rc, size, want)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: part %d: %w", name, b.Server, err)
	}
	if p.Server != b.Server || p.Version != b.Version {
		return nil, fmt.Errorf("%w: checkpoint %s: part %d holds server %d version %d, the manifest says %d", ErrCorrupt, name, b.Server, p.Server, p.Version, b.Version)
	}
	return p, nil
}

// WritePart stores p as an object of the checkpoint store, streaming it
// (no copy of the whole blob in memory), and returns its manifest entry.
// The stream can start over (io.Seeker to 0), so a store with retries
// (store.WithRetry) retries a failed upload.
func (l Location) WritePart(ctx context.Context, object string, p *Part) (Blob, error) {
	size, err := PartSize(p)
	if err != nil {
		return Blob{}, err
	}
	r := &partReader{p: p}
	r.start()
	err = l.Store.Put(ctx, object, r, size)
	sum, encErr := r.stop()
	if err != nil {
		return Blob{}, fmt.Errorf("store checkpoint part: %w", err)
	}
	if encErr != nil {
		return Blob{}, fmt.Errorf("store checkpoint part: %w", encErr)
	}
	return Blob{Server: p.Server, Object: object, SHA256: hex.EncodeToString(sum[:]), Bytes: size, Version: p.Version}, nil
}

// partReader streams a part's encoding (WritePart in a goroutine, through
// a pipe). Seek(0, io.SeekStart) starts the encoding over.
type partReader struct {
	p    *Part
	pr   *io.PipeReader
	done chan struct{}
	sum  [32]byte
	err  error
}

func (r *partReader) start() {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	r.pr, r.done = pr, done
	go func() {
		defer close(done)
		var err error
		r.sum, _, err = WritePart(pw, r.p)
		r.err = err
		pw.CloseWithError(err)
	}()
}

// stop ends the encoding (if the upload stopped early) and returns its
// digest and error.
func (r *partReader) stop() ([32]byte, error) {
	r.pr.CloseWithError(errUploadEnded)
	<-r.done
	if errors.Is(r.err, errUploadEnded) {
		return r.sum, nil // the reader stopped early: Put's error says why
	}
	return r.sum, r.err
}

var errUploadEnded = errors.New("checkpoint: upload ended")

func (r *partReader) Read(b []byte) (int, error) { return r.pr.Read(b) }

func (r *partReader) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, errors.New("checkpoint: a part stream only goes back to its start")
	}
	r.stop()
	r.start()
	return 0, nil
}

// VerifyPart checks a stored part against its digest without keeping it.
func (l Location) VerifyPart(ctx context.Context, run, job, name string, b Blob) error {
	_, err := l.ReadPart(ctx, run, job, name, b)
	return err
}

// Remove deletes every object of a checkpoint folder, the manifest first
// (so that a crash half-way leaves an incomplete folder, never a manifest
// naming missing parts).
func (l Location) Remove(ctx context.Context, run, job, name string) error {
	dir := l.Dir(run, job, name)
	if err := l.Store.Delete(ctx, dir+MetaName); err != nil {
		return fmt.Errorf("remove checkpoint %s: %w", name, err)
	}
	objs, err := l.Store.List(ctx, dir)
	if err != nil {
		return fmt.Errorf("remove checkpoint %s: %w", name, err)
	}
	for _, o := range objs {
		if err := l.Store.Delete(ctx, o); err != nil {
			return fmt.Errorf("remove checkpoint %s: %w", name, err)
		}
	}
	return nil
}

// Retain removes the job's checkpoint folders except the newest keep ones
// with a manifest, the newest marked Best, and protect (the one the pointer
// names). Incomplete folders older than the newest complete one go too. It
// returns the folders removed.
func (l Location) Retain(ctx context.Context, run, job string, keep int, protect string) ([]string, error) {
	all, err := l.Folders(ctx, run, job)
	if err != nil {
		return nil, err
	}
	complete, err := l.List(ctx, run, job)
	if err != nil {
		return nil, err
	}
	keepSet := map[string]bool{protect: true}
	for i := len(complete) - 1; i >= 0 && i >= len(complete)-keep; i-- {
		keepSet[complete[i]] = true
	}
	for i := len(complete) - 1; i >= 0; i-- {
		if m, err := l.ReadMeta(ctx, run, job, complete[i]); err == nil && m.Best {
			keepSet[complete[i]] = true
			break
		}
	}
	newest := ""
	if len(complete) > 0 {
		newest = complete[len(complete)-1]
	}
	var removed []string
	for _, name := range all {
		if keepSet[name] || name > newest {
			continue // kept, or a checkpoint being written now
		}
		if err := l.Remove(ctx, run, job, name); err != nil {
			return removed, err
		}
		removed = append(removed, name)
	}
	return removed, nil
}
