package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
)

func testBundle(t testing.TB) *Bundle {
	t.Helper()
	cfg := DefaultConfig(16, 3)
	cfg.Dense = 8
	n, err := New(cfg, 9)
	if err != nil {
		t.Fatal(err)
	}
	n.BN()[0].Mean[0] = 0.25
	return &Bundle{Net: n, Labels: []string{"blue", "dress", "red"}, Mean: []float32{0.5, 0.4, 0.3}, Std: []float32{0.2, 0.2, 0.25},
		Thresholds: []float32{0.5, 0.3, 0.7}, Meta: map[string]string{"epoch": "3"}}
}

func encode(t testing.TB, b *Bundle) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := b.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestModelFileRoundTrip(t *testing.T) {
	b := testBundle(t)
	path := filepath.Join(t.TempDir(), "m.tailor")
	if err := b.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Net.Config() != b.Net.Config() {
		t.Errorf("config %+v, want %+v", got.Net.Config(), b.Net.Config())
	}
	for i, p := range b.Net.Params() {
		q := got.Net.Params()[i]
		if p.Name != q.Name || !bytes.Equal(f32bytes(p.Data), f32bytes(q.Data)) {
			t.Errorf("param %s differs after round trip", p.Name)
		}
	}
	if got.Net.BN()[0].Mean[0] != 0.25 {
		t.Errorf("batchnorm mean %g, want 0.25", got.Net.BN()[0].Mean[0])
	}
	if got.Labels[1] != "dress" || got.Thresholds[2] != 0.7 || got.Std[2] != 0.25 || got.Meta["epoch"] != "3" {
		t.Errorf("metadata lost: %+v", got)
	}
}

func f32bytes(d []float32) []byte {
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, d)
	return buf.Bytes()
}

func TestModelFileErrors(t *testing.T) {
	good := encode(t, testBundle(t))
	otherVersion := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(otherVersion[8:], 2)
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrNotModel},
		{"png", []byte("\x89PNG\r\n\x1a\n...."), ErrNotModel},
		{"other version", otherVersion, ErrVersion},
		{"truncated header", good[:12], ErrTruncated},
		{"truncated tensors", good[:len(good)/2], ErrTruncated},
		{"missing checksum", good[:len(good)-10], ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.data)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Every flipped byte is caught (sampled: header, tensors and checksum).
	for _, pos := range []int{9, 20, 100, len(good) / 2, len(good) - 40, len(good) - 1} {
		bad := append([]byte(nil), good...)
		bad[pos] ^= 0x10
		if _, err := Decode(bad); err == nil {
			t.Errorf("flipped byte at %d not detected", pos)
		} else if pos >= 16 && !errors.Is(err, ErrChecksum) {
			t.Errorf("flipped byte at %d: %v, want %v", pos, err, ErrChecksum)
		}
	}
}

func FuzzDecodeModel(f *testing.F) {
	good := encode(f, testBundle(f))
	f.Add(good)
	f.Add(good[:100])
	f.Add([]byte(fileMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Decode(data)
		if err == nil {
			if err := b.Validate(); err != nil {
				t.Fatalf("decoded an invalid bundle: %v", err)
			}
		}
	})
}

// FuzzDecodeModelHeader fuzzes past the checksum: the input's last 32 bytes
// are replaced by a valid SHA-256, so the header and tensor parsing are reached.
func FuzzDecodeModelHeader(f *testing.F) {
	good := encode(f, testBundle(f))
	f.Add(good[:len(good)-sha256.Size])
	f.Add(good[:200])
	f.Fuzz(func(t *testing.T, body []byte) {
		sum := sha256.Sum256(body)
		b, err := Decode(append(body, sum[:]...))
		if err == nil {
			if err := b.Validate(); err != nil {
				t.Fatalf("decoded an invalid bundle: %v", err)
			}
		}
	})
}

func TestNumParams(t *testing.T) {
	for _, size := range []int{16, 32, 64, 96} {
		n, err := New(DefaultConfig(size, 15), 1)
		if err != nil {
			t.Fatal(err)
		}
		bn := 0
		for _, s := range n.BN() {
			bn += 2 * len(s.Mean)
		}
		if got, want := n.Config().NumParams(true), n.NumParams()+bn; got != want {
			t.Errorf("size %d: NumParams %d, counted %d", size, got, want)
		}
	}
}
