package fashion

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const testSource = "testdata"

// idxBytes builds a raw IDX file of unsigned bytes with the given dims and data.
func idxBytes(dims []int, data []byte) []byte {
	b := []byte{0, 0, idxUbyte, byte(len(dims))}
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, uint32(d))
	}
	return append(b, data...)
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReadIDX(t *testing.T) {
	good := idxBytes([]int{2, 3}, []byte{1, 2, 3, 4, 5, 6})
	truncGz := gzipBytes(t, good)
	truncGz = truncGz[:len(truncGz)-6]
	tests := []struct {
		name     string
		in       []byte
		wantDims []int
		wantErr  error // nil: success; errAny: any error
	}{
		{"raw", good, []int{2, 3}, nil},
		{"gzip", gzipBytes(t, good), []int{2, 3}, nil},
		{"labels", idxBytes([]int{4}, []byte{0, 9, 3, 1}), []int{4}, nil},
		{"zero dim", idxBytes([]int{0, 28, 28}, nil), []int{0, 28, 28}, nil},
		{"empty", nil, nil, ErrIDXTruncated},
		{"short magic", []byte{0, 0, 8}, nil, ErrIDXTruncated},
		{"bad magic", append([]byte{0x12, 0x34}, good[2:]...), nil, ErrIDXMagic},
		{"float type", append([]byte{0, 0, 0x0d}, good[3:]...), nil, ErrIDXMagic},
		{"no dims", []byte{0, 0, 8, 0}, nil, ErrIDXMagic},
		{"short dims", good[:9], nil, ErrIDXTruncated},
		{"short data", good[:len(good)-1], nil, ErrIDXTruncated},
		{"trailing data", append(slices.Clone(good), 7), nil, ErrIDXTrailing},
		{"huge dims", idxBytes([]int{1 << 20, 1 << 20, 28}, nil), nil, ErrIDXTooLarge},
		{"truncated gzip", truncGz, nil, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadIDX(bytes.NewReader(tt.in))
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("ReadIDX: got error %v, want none", err)
			case tt.wantErr == errAny && err == nil, tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("ReadIDX: got error %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			if !slices.Equal(got.Dims, tt.wantDims) {
				t.Errorf("dims: got %v, want %v", got.Dims, tt.wantDims)
			}
			if want := tt.in[4+4*len(tt.wantDims):]; tt.name != "gzip" && !bytes.Equal(got.Data, want) {
				t.Errorf("data: got %v, want %v", got.Data, want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestLoadSet(t *testing.T) {
	for _, tt := range []struct {
		name       string
		wantN      int
		wantLabels []uint8 // the first labels, as in Fashion-MNIST
	}{
		{"train", 300, []uint8{9, 0, 0, 3, 0, 2, 7, 2}},
		{"t10k", 100, []uint8{9, 2, 1, 1, 6, 1, 4, 6}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadSet(testSource, tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if s.Len() != tt.wantN || s.Rows != 28 || s.Cols != 28 || len(s.Pix) != tt.wantN*28*28 {
				t.Fatalf("got %d images of %dx%d (%d bytes), want %d of 28x28", s.Len(), s.Rows, s.Cols, len(s.Pix), tt.wantN)
			}
			if got := s.Labels[:len(tt.wantLabels)]; !slices.Equal(got, tt.wantLabels) {
				t.Errorf("first labels: got %v, want %v", got, tt.wantLabels)
			}
		})
	}
}

// TestLoadSetUncompressed reads IDX files without .gz and checks they decode to
// the same set as the gzip'd ones.
func TestLoadSetUncompressed(t *testing.T) {
	dir := t.TempDir()
	for _, base := range []string{"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"} {
		f, err := os.Open(filepath.Join(testSource, base+".gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		var raw bytes.Buffer
		if _, err := raw.ReadFrom(zr); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := os.WriteFile(filepath.Join(dir, base), raw.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := LoadSet(dir, "t10k")
	if err != nil {
		t.Fatal(err)
	}
	want, err := LoadSet(testSource, "t10k")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Pix, want.Pix) || !slices.Equal(got.Labels, want.Labels) {
		t.Error("uncompressed files decode differently from the gzip'd ones")
	}
}

func TestLoadSetErrors(t *testing.T) {
	img := idxBytes([]int{2, 28, 28}, make([]byte, 2*28*28))
	tests := []struct {
		name   string
		images []byte // nil: no file
		labels []byte
		want   error
	}{
		{"count mismatch", img, idxBytes([]int{3}, []byte{1, 2, 3}), ErrIDXShape},
		{"images not 3d", idxBytes([]int{2, 784}, make([]byte, 2*784)), idxBytes([]int{2}, []byte{1, 2}), ErrIDXShape},
		{"labels not 1d", img, idxBytes([]int{2, 1}, []byte{1, 2}), ErrIDXShape},
		{"tiny images", idxBytes([]int{2, 2, 2}, make([]byte, 8)), idxBytes([]int{2}, []byte{1, 2}), ErrIDXShape},
		{"no images", idxBytes([]int{0, 28, 28}, nil), idxBytes([]int{0}, nil), ErrIDXShape},
		{"class out of range", img, idxBytes([]int{2}, []byte{1, 10}), errAny},
		{"bad magic", append([]byte{1}, img[1:]...), idxBytes([]int{2}, []byte{1, 2}), ErrIDXMagic},
		{"missing labels", img, nil, os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for base, b := range map[string][]byte{"t10k-images-idx3-ubyte": tt.images, "t10k-labels-idx1-ubyte.gz": tt.labels} {
				if b == nil {
					continue
				}
				if filepath.Ext(base) == ".gz" {
					b = gzipBytes(t, b)
				}
				if err := os.WriteFile(filepath.Join(dir, base), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadSet(dir, "t10k")
			if err == nil || (tt.want != errAny && !errors.Is(err, tt.want)) {
				t.Fatalf("LoadSet: got error %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := LoadSet(testSource, "extra"); err == nil {
		t.Error("LoadSet of an unknown split: got no error")
	}
}

// FuzzReadIDX feeds arbitrary bytes to the IDX decoder: it must not panic, and
// what it accepts must be consistent with its header.
func FuzzReadIDX(f *testing.F) {
	for _, name := range []string{"t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"} {
		b, err := os.ReadFile(filepath.Join(testSource, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(idxBytes([]int{2, 3, 3}, make([]byte, 18)))
	f.Add(idxBytes([]int{3}, []byte{1, 2, 3}))
	f.Add(idxBytes([]int{1 << 16, 1 << 16}, []byte{1}))
	f.Add(gzipBytes(f, idxBytes([]int{2, 2}, []byte{1, 2, 3, 4})))
	f.Add([]byte{0, 0, 8, 3, 0, 0})
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, in []byte) {
		idx, err := ReadIDX(bytes.NewReader(in))
		if err != nil {
			return
		}
		n := 1
		for _, d := range idx.Dims {
			n *= d
		}
		if n != len(idx.Data) {
			t.Fatalf("dims %v hold %d bytes, data has %d", idx.Dims, n, len(idx.Data))
		}
	})
}
