package fashion

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Errors returned by the IDX reader. They are wrapped with detail; test with errors.Is.
var (
	ErrIDXMagic     = errors.New("fashion: bad idx magic number")
	ErrIDXTruncated = errors.New("fashion: truncated idx data")
	ErrIDXTrailing  = errors.New("fashion: trailing bytes after idx data")
	ErrIDXTooLarge  = errors.New("fashion: idx data too large")
	ErrIDXShape     = errors.New("fashion: unexpected idx shape")
)

// MaxIDXBytes bounds the payload ReadIDX accepts, so a corrupt header cannot make it
// allocate without limit. The Fashion-MNIST train images are 47 MB.
const MaxIDXBytes = 1 << 28

// idxUbyte is the IDX element type code for unsigned bytes, the only type the
// MNIST family uses.
const idxUbyte = 0x08

// IDX is a decoded IDX file of unsigned bytes: a row-major array of shape Dims.
type IDX struct {
	Dims []int
	Data []byte
}

// ReadIDX decodes an IDX file of unsigned bytes (magic 0x0000 08 nd) from r. The
// input may be gzip-compressed; that is detected from its first bytes. ReadIDX
// checks the magic number, the dimensions and that the payload has exactly the
// size the header announces.
func ReadIDX(r io.Reader) (*IDX, error) {
	br := bufio.NewReader(r)
	if head, err := br.Peek(2); err == nil && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("open gzip stream: %w", err)
		}
		defer zr.Close()
		return readRawIDX(zr)
	}
	return readRawIDX(br)
}

func readRawIDX(r io.Reader) (*IDX, error) {
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, fmt.Errorf("read magic: %w: %w", ErrIDXTruncated, err)
	}
	if magic[0] != 0 || magic[1] != 0 {
		return nil, fmt.Errorf("%w: got % x, want 00 00 08 nd", ErrIDXMagic, magic)
	}
	if magic[2] != idxUbyte {
		return nil, fmt.Errorf("%w: element type 0x%02x, only unsigned byte (0x08) is supported", ErrIDXMagic, magic[2])
	}
	nd := int(magic[3])
	if nd == 0 {
		return nil, fmt.Errorf("%w: zero dimensions", ErrIDXMagic)
	}
	hdr := make([]byte, 4*nd)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("read %d dimensions: %w: %w", nd, ErrIDXTruncated, err)
	}
	dims := make([]int, nd)
	total := int64(1)
	for i := range dims {
		d := binary.BigEndian.Uint32(hdr[4*i:])
		dims[i] = int(d)
		if d == 0 {
			total = 0
			continue
		}
		if total > 0 {
			total *= int64(d)
			if total > MaxIDXBytes {
				return nil, fmt.Errorf("%w: shape %v exceeds %d bytes", ErrIDXTooLarge, dims[:i+1], MaxIDXBytes)
			}
		}
	}
	// Read through a bytes.Buffer so memory grows with the bytes that actually
	// arrive, not with what a (possibly corrupt) header promises.
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, total+1))
	if err != nil {
		return nil, fmt.Errorf("read idx data: %w", err)
	}
	if n < total {
		return nil, fmt.Errorf("%w: shape %v needs %d bytes, got %d", ErrIDXTruncated, dims, total, n)
	}
	if n > total {
		return nil, fmt.Errorf("%w: shape %v needs %d bytes", ErrIDXTrailing, dims, total)
	}
	return &IDX{Dims: dims, Data: buf.Bytes()}, nil
}

// Set is one source split of Fashion-MNIST: N grayscale images of Rows x Cols
// pixels (0 = background, 255 = garment) and their class labels.
type Set struct {
	Name   string // "train" or "t10k"
	Rows   int
	Cols   int
	Pix    []byte  // N*Rows*Cols bytes, image i at Pix[i*Rows*Cols:]
	Labels []uint8 // class index 0..NumClasses-1 per image
}

// Len returns the number of images.
func (s *Set) Len() int { return len(s.Labels) }

// Image returns the pixels of image i (Rows*Cols bytes, row-major).
func (s *Set) Image(i int) []byte {
	n := s.Rows * s.Cols
	return s.Pix[i*n : (i+1)*n]
}

// LoadSet reads the source split name ("train" or "t10k") from dir, which holds
// the four Fashion-MNIST IDX files, gzip-compressed (NAME-idx3-ubyte.gz) or not
// (NAME-idx3-ubyte).
func LoadSet(dir, name string) (*Set, error) {
	if name != "train" && name != "t10k" {
		return nil, fmt.Errorf("unknown source split %q, want train or t10k", name)
	}
	imgs, err := readIDXFile(dir, name+"-images-idx3-ubyte")
	if err != nil {
		return nil, err
	}
	labels, err := readIDXFile(dir, name+"-labels-idx1-ubyte")
	if err != nil {
		return nil, err
	}
	return newSet(name, imgs, labels)
}

func newSet(name string, imgs, labels *IDX) (*Set, error) {
	if len(imgs.Dims) != 3 {
		return nil, fmt.Errorf("%s images: %w: %d dimensions, want 3 (n, rows, cols)", name, ErrIDXShape, len(imgs.Dims))
	}
	if len(labels.Dims) != 1 {
		return nil, fmt.Errorf("%s labels: %w: %d dimensions, want 1", name, ErrIDXShape, len(labels.Dims))
	}
	n, rows, cols := imgs.Dims[0], imgs.Dims[1], imgs.Dims[2]
	if rows < 4 || cols < 4 {
		return nil, fmt.Errorf("%s images: %w: %dx%d pixels, want at least 4x4", name, ErrIDXShape, rows, cols)
	}
	if labels.Dims[0] != n {
		return nil, fmt.Errorf("%s: %w: %d images but %d labels", name, ErrIDXShape, n, labels.Dims[0])
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: %w: no images", name, ErrIDXShape)
	}
	for i, l := range labels.Data {
		if int(l) >= NumClasses {
			return nil, fmt.Errorf("%s labels: image %d has class %d, want 0..%d", name, i, l, NumClasses-1)
		}
	}
	return &Set{Name: name, Rows: rows, Cols: cols, Pix: imgs.Data, Labels: labels.Data}, nil
}

// readIDXFile reads dir/base.gz, or dir/base when there is no .gz.
func readIDXFile(dir, base string) (*IDX, error) {
	path := filepath.Join(dir, base+".gz")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		path = filepath.Join(dir, base)
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open fashion-mnist file: %w", err)
	}
	defer f.Close()
	idx, err := ReadIDX(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return idx, nil
}
