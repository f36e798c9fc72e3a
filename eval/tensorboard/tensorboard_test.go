package tensorboard_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/eval/tensorboard"
	"github.com/tailorml/tailor/eval/tensorboard/tbtest"
)

func TestCRC32CVectors(t *testing.T) {
	seq := func(f func(i int) byte) []byte {
		b := make([]byte, 32)
		for i := range b {
			b[i] = f(i)
		}
		return b
	}
	// the check value of CRC-32C, and RFC 3720's (iSCSI) B.4 vectors
	for _, c := range []struct {
		name string
		data []byte
		want uint32
	}{
		{"123456789", []byte("123456789"), 0xE3069283},
		{"32 zeros", make([]byte, 32), 0x8A9136AA},
		{"32 0xff", bytes.Repeat([]byte{0xff}, 32), 0x62A8AB43},
		{"0..31", seq(func(i int) byte { return byte(i) }), 0x46DD794E},
		{"31..0", seq(func(i int) byte { return byte(31 - i) }), 0x113FDB5C},
	} {
		if got := tensorboard.CRC32C(c.data); got != c.want {
			t.Errorf("crc32c(%s) = %#08x, want %#08x", c.name, got, c.want)
		}
	}
	// mask = rotate right by 15, plus 0xa282ead8 (mod 2^32)
	c := uint32(0xE3069283)
	if got, want := tensorboard.MaskedCRC([]byte("123456789")), (c>>15|c<<17)+0xa282ead8; got != want {
		t.Errorf("masked crc = %#08x, want %#08x", got, want)
	}
}

func TestAppendRecordFraming(t *testing.T) {
	data := []byte("hello")
	rec := tensorboard.AppendRecord(nil, data)
	if len(rec) != 8+4+len(data)+4 {
		t.Fatalf("record of %d bytes, want %d", len(rec), 16+len(data))
	}
	if n := binary.LittleEndian.Uint64(rec); n != uint64(len(data)) {
		t.Errorf("length field %d, want %d", n, len(data))
	}
	if got, want := binary.LittleEndian.Uint32(rec[8:]), tensorboard.MaskedCRC(rec[:8]); got != want {
		t.Errorf("length crc %#08x, want %#08x", got, want)
	}
	if !bytes.Equal(rec[12:17], data) {
		t.Errorf("data %q, want %q", rec[12:17], data)
	}
	if got, want := binary.LittleEndian.Uint32(rec[17:]), tensorboard.MaskedCRC(data); got != want {
		t.Errorf("data crc %#08x, want %#08x", got, want)
	}
}

func TestParseRefusesCorruption(t *testing.T) {
	good := tensorboard.AppendRecord(nil, tensorboard.EncodeScalars(time.Unix(1, 0), 3, []tensorboard.Scalar{{Tag: "a", Value: 1}}))
	if _, err := tensorboard.Parse(good); err != nil {
		t.Fatalf("good record: %v", err)
	}
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x10
		if _, err := tensorboard.Parse(b); !errors.Is(err, tensorboard.ErrCorrupt) {
			t.Errorf("byte %d flipped: err %v, want ErrCorrupt", i, err)
		}
	}
	for n := 1; n < len(good); n++ {
		if _, err := tensorboard.Parse(good[:n]); !errors.Is(err, tensorboard.ErrCorrupt) {
			t.Errorf("truncated to %d bytes: err %v, want ErrCorrupt", n, err)
		}
	}
}

// sample is what the tests write: a file_version, a session start, two
// steps of scalars.
var sample = []struct {
	step    int64
	scalars []tensorboard.Scalar
}{
	{1, []tensorboard.Scalar{{"train/loss", 0.693}, {"val/loss", 0.5}, {"val/mAP", 0.25}, {"val/AP/blue", 0.125}, {"train/lr", 1e-3}}},
	{2, []tensorboard.Scalar{{"train/loss", 0.4}, {"val/loss", 0.375}, {"val/mAP", 0.5}, {"train/img_per_s", 321}}},
}

func writeSample(t *testing.T, dir string) *tensorboard.Writer {
	t.Helper()
	w, err := tensorboard.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SessionStart(1, "fresh"); err != nil {
		t.Fatal(err)
	}
	for _, s := range sample {
		if err := w.Scalars(s.step, s.scalars); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w
}

// checkSample compares events read back with what writeSample wrote.
func checkSample(t *testing.T, evs []tensorboard.Event, start time.Time) {
	t.Helper()
	if len(evs) != 2+len(sample) {
		t.Fatalf("%d events, want %d: %+v", len(evs), 2+len(sample), evs)
	}
	if evs[0].FileVersion != tensorboard.FileVersion {
		t.Errorf("first event's file_version %q, want %q", evs[0].FileVersion, tensorboard.FileVersion)
	}
	if evs[1].SessionLog != tensorboard.SessionStart || evs[1].Step != 1 {
		t.Errorf("second event: session_log %d at step %d, want %d at 1", evs[1].SessionLog, evs[1].Step, tensorboard.SessionStart)
	}
	for i, ev := range evs {
		if wt := time.Unix(0, int64(ev.WallTime*1e9)); wt.Before(start.Add(-time.Second)) || wt.After(time.Now().Add(time.Second)) {
			t.Errorf("event %d: wall_time %v, want within the test's run", i, wt)
		}
	}
	for i, s := range sample {
		ev := evs[2+i]
		if ev.Step != s.step {
			t.Errorf("event %d: step %d, want %d", 2+i, ev.Step, s.step)
		}
		if len(ev.Scalars) != len(s.scalars) {
			t.Fatalf("event %d: scalars %v, want %v", 2+i, ev.Scalars, s.scalars)
		}
		for j, want := range s.scalars {
			got := ev.Scalars[j]
			if got.Tag != want.Tag || got.Value != float64(float32(want.Value)) {
				t.Errorf("event %d scalar %d: %s=%v, want %s=%v", 2+i, j, got.Tag, got.Value, want.Tag, float32(want.Value))
			}
		}
	}
}

func TestWriterRoundTrip(t *testing.T) {
	start := time.Now()
	dir := t.TempDir()
	w := writeSample(t, dir)
	if !strings.HasPrefix(w.Name(), tensorboard.Prefix) {
		t.Errorf("file name %q, want the prefix %q", w.Name(), tensorboard.Prefix)
	}
	evs, err := tensorboard.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	checkSample(t, evs, start)
	if err := w.Scalars(3, nil); err == nil {
		t.Error("a write after Close succeeded")
	}
}

// TestPythonReadsEventFile reads the file with protoc-generated Python
// from TensorBoard's own protos (skipped without protoc and python3-protobuf).
func TestPythonReadsEventFile(t *testing.T) {
	start := time.Now()
	w := writeSample(t, t.TempDir())
	checkSample(t, tbtest.ReadWithPython(t, w.Path()), start)

	// the reader checks what it says it checks: a flipped bit in a data
	// CRC, in a length CRC, or a truncated file is refused
	good, err := os.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	first := 12 + int(binary.LittleEndian.Uint64(good)) + 4 // the file_version record
	for name, bad := range map[string][]byte{
		"data crc":   flip(good, first-1),
		"length crc": flip(good, first+9),
		"truncated":  good[:len(good)-3],
	} {
		p := filepath.Join(t.TempDir(), tensorboard.Prefix+"bad")
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := tbtest.TryReadWithPython(t, p); err == nil {
			t.Errorf("%s: the python reader accepted the file", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 1
	return b
}

// TestNewFileBesideOld: a second writer in the same folder (a resumed run,
// a new leader), even in the same second, starts a file of its own and
// leaves the first one as it was.
func TestNewFileBesideOld(t *testing.T) {
	dir := t.TempDir()
	w1 := writeSample(t, dir)
	before, err := os.ReadFile(w1.Path())
	if err != nil {
		t.Fatal(err)
	}
	var ws []*tensorboard.Writer
	for range 3 {
		w, err := tensorboard.Create(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Scalars(9, []tensorboard.Scalar{{"x", 1}}); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	names := map[string]bool{w1.Name(): true}
	for _, w := range ws {
		if names[w.Name()] {
			t.Errorf("two writers share the file %s", w.Name())
		}
		names[w.Name()] = true
		w.Close()
	}
	after, err := os.ReadFile(w1.Path())
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the first file changed (err %v)", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, tensorboard.Prefix+"*"))
	if len(files) != 4 {
		t.Errorf("%d event files, want 4: %v", len(files), files)
	}
}

func TestEncodeNonFinite(t *testing.T) {
	evs, err := tensorboard.Parse(tensorboard.AppendRecord(nil, tensorboard.EncodeScalars(time.Unix(0, 0), 1, []tensorboard.Scalar{{"inf", math.Inf(1)}})))
	if err != nil || len(evs) != 1 || !math.IsInf(evs[0].Scalars[0].Value, 1) {
		t.Errorf("got %+v, %v; want +Inf back", evs, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(tensorboard.AppendRecord(tensorboard.AppendRecord(nil, tensorboard.EncodeFileVersion(time.Unix(5, 0))),
		tensorboard.EncodeScalars(time.Unix(6, 0), 2, []tensorboard.Scalar{{"a", 1}})))
	f.Add(tensorboard.AppendRecord(nil, tensorboard.EncodeSessionStart(time.Unix(6, 0), 2, "m")))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := tensorboard.Parse(b)
		if err != nil && !errors.Is(err, tensorboard.ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		if err == nil {
			// what decodes encodes again to records that decode the same
			var again []byte
			for _, ev := range evs {
				again = tensorboard.AppendRecord(again, tensorboard.EncodeScalars(time.Unix(0, 0), ev.Step, ev.Scalars))
			}
			evs2, err := tensorboard.Parse(again)
			if err != nil || len(evs2) != len(evs) {
				t.Fatalf("re-encoded: %d events, %v; want %d", len(evs2), err, len(evs))
			}
		}
	})
}
