// Package tensorboard writes scalars as TensorBoard event files
// (events.out.tfevents.<secs>.<host>) that an unmodified TensorBoard reads:
// TFRecord framing (the length and the data each followed by a masked
// CRC-32C), a first Event with file_version "brain.Event:2", then one Event
// per step with Summary values of simple_value scalars. The few protobuf
// fields it needs are encoded by their numbers in TensorBoard's
// tensorboard/compat/proto/event.proto and summary.proto (testdata/proto
// has copies; the tests read what Writer writes with protoc-generated
// Python). Read decodes such a file again, checking every CRC.
package tensorboard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// FileVersion is the first event's file_version.
const FileVersion = "brain.Event:2"

// Prefix starts every event file's name; TensorBoard reads the files
// whose names contain "tfevents".
const Prefix = "events.out.tfevents."

// Field numbers in TensorBoard's event.proto and summary.proto.
const (
	eventWallTime    = 1 // double
	eventStep        = 2 // int64
	eventFileVersion = 3 // string
	eventSummary     = 5 // Summary
	eventSessionLog  = 7 // SessionLog

	summaryValue = 1 // repeated Summary.Value

	valueTag         = 1 // string
	valueSimpleValue = 2 // float

	sessionLogStatus = 1 // SessionLog.SessionStatus
	sessionLogMsg    = 3 // string

	// SessionStart is SessionLog.START: a writer that goes on from an
	// earlier step (a resume) says so, and TensorBoard's loader drops the
	// older data at and after that step.
	SessionStart = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C is the CRC-32C (Castagnoli) of b.
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// MaskedCRC is TFRecord's masked CRC-32C of b: the CRC rotated right by
// 15 bits plus 0xa282ead8 (a CRC of data holding CRCs is then no CRC of a
// CRC).
func MaskedCRC(b []byte) uint32 {
	c := CRC32C(b)
	return (c>>15 | c<<17) + 0xa282ead8
}

// AppendRecord appends data framed as a TFRecord to dst: the length as a
// little-endian uint64, the masked CRC-32C of those 8 bytes, the data, and
// the masked CRC-32C of the data.
func AppendRecord(dst, data []byte) []byte {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(data)))
	dst = append(dst, n[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, MaskedCRC(n[:]))
	dst = append(dst, data...)
	return binary.LittleEndian.AppendUint32(dst, MaskedCRC(data))
}

// Scalar is one tag's value at a step.
type Scalar struct {
	Tag   string
	Value float64
}

// Event is one decoded event of a file (Read).
type Event struct {
	WallTime    float64
	Step        int64
	FileVersion string
	Scalars     []Scalar // Summary simple_values
	SessionLog  int      // SessionLog.status; 0 if none
}

func appendEventHeader(b []byte, wall time.Time, step int64) []byte {
	b = protowire.AppendTag(b, eventWallTime, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(float64(wall.UnixNano())/1e9))
	if step != 0 {
		b = protowire.AppendTag(b, eventStep, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(step))
	}
	return b
}

// EncodeFileVersion is the Event that starts a file.
func EncodeFileVersion(wall time.Time) []byte {
	b := appendEventHeader(nil, wall, 0)
	b = protowire.AppendTag(b, eventFileVersion, protowire.BytesType)
	return protowire.AppendString(b, FileVersion)
}

// EncodeScalars is an Event at step with one Summary value per scalar (as
// float32: a simple_value is a float).
func EncodeScalars(wall time.Time, step int64, scalars []Scalar) []byte {
	var sum []byte
	for _, s := range scalars {
		var v []byte
		v = protowire.AppendTag(v, valueTag, protowire.BytesType)
		v = protowire.AppendString(v, s.Tag)
		v = protowire.AppendTag(v, valueSimpleValue, protowire.Fixed32Type)
		v = protowire.AppendFixed32(v, math.Float32bits(float32(s.Value)))
		sum = protowire.AppendTag(sum, summaryValue, protowire.BytesType)
		sum = protowire.AppendBytes(sum, v)
	}
	b := appendEventHeader(nil, wall, step)
	b = protowire.AppendTag(b, eventSummary, protowire.BytesType)
	return protowire.AppendBytes(b, sum)
}

// EncodeSessionStart is an Event at step with SessionLog{status: START,
// msg}.
func EncodeSessionStart(wall time.Time, step int64, msg string) []byte {
	var sl []byte
	sl = protowire.AppendTag(sl, sessionLogStatus, protowire.VarintType)
	sl = protowire.AppendVarint(sl, SessionStart)
	if msg != "" {
		sl = protowire.AppendTag(sl, sessionLogMsg, protowire.BytesType)
		sl = protowire.AppendString(sl, msg)
	}
	b := appendEventHeader(nil, wall, step)
	b = protowire.AppendTag(b, eventSessionLog, protowire.BytesType)
	return protowire.AppendBytes(b, sl)
}

// Writer appends events to one event file. Every event is written with a
// single write and synced, so a crash leaves at most a truncated last
// record, which TensorBoard skips. A writer never opens an existing file:
// a resumed run or a new leader starts a file of its own beside the old
// ones. Its methods may be called from several goroutines.
type Writer struct {
	mu   sync.Mutex
	f    *os.File
	path string
	now  func() time.Time
}

// Create makes dir and a new event file in it named
// events.out.tfevents.<unix seconds>.<host> (with ".1", ".2", ... added if
// that name is taken), and writes the file_version event.
func Create(dir string) (*Writer, error) {
	return create(dir, time.Now)
}

func create(dir string, now func() time.Time) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tensorboard folder: %w", err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	t := now()
	base := filepath.Join(dir, Prefix+strconv.FormatInt(t.Unix(), 10)+"."+host)
	var f *os.File
	path := base
	for i := 1; ; i++ {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || i > 1000 {
			return nil, fmt.Errorf("tensorboard event file: %w", err)
		}
		path = base + "." + strconv.Itoa(i)
	}
	w := &Writer{f: f, path: path, now: now}
	if err := w.write(EncodeFileVersion(t)); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// Path is the event file's path.
func (w *Writer) Path() string { return w.path }

// Name is the event file's name.
func (w *Writer) Name() string { return filepath.Base(w.path) }

// Scalars writes the scalars at step, stamped with the current time.
func (w *Writer) Scalars(step int64, scalars []Scalar) error {
	return w.write(EncodeScalars(w.now(), step, scalars))
}

// SessionStart records that the run goes on from step (a resume, a new
// leader, a rollback): TensorBoard drops what earlier files or events hold
// at and after step.
func (w *Writer) SessionStart(step int64, msg string) error {
	return w.write(EncodeSessionStart(w.now(), step, msg))
}

func (w *Writer) write(event []byte) error {
	rec := AppendRecord(nil, event)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return errors.New("tensorboard: write to a closed event file")
	}
	if _, err := w.f.Write(rec); err != nil {
		return fmt.Errorf("tensorboard: write %s: %w", w.path, err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("tensorboard: sync %s: %w", w.path, err)
	}
	return nil
}

// Close closes the file. Closing a closed or nil Writer does nothing.
func (w *Writer) Close() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
