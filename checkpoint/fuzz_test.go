package checkpoint

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzReadPart: any bytes either decode into a part that re-encodes to the
// same bytes, or fail with ErrCorrupt; never a panic or a huge allocation.
func FuzzReadPart(f *testing.F) {
	good, _ := encodePart(f, samplePart())
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte(partMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadPart(bytes.NewReader(b), int64(len(b)), nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		var again bytes.Buffer
		if _, _, err := WritePart(&again, p); err != nil {
			t.Fatalf("decoded part does not encode: %v", err)
		}
		q, err := ReadPart(bytes.NewReader(again.Bytes()), int64(again.Len()), nil)
		if err != nil || q.Version != p.Version || len(q.Parts) != len(p.Parts) {
			t.Fatalf("re-encoded part does not decode the same: %v", err)
		}
	})
}

// FuzzDecodeMeta: a manifest either decodes and validates, or fails with
// ErrCorrupt.
func FuzzDecodeMeta(f *testing.F) {
	good, err := EncodeMeta(sampleMeta())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(bytes.Replace(good, []byte(`"epochs": 2`), []byte(`"epochs": 3`), 1))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":1,"checksum":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded manifest does not validate: %v", err)
		}
	})
}
