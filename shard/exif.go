package shard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// EXIF orientation values (TIFF tag 0x0112): how the stored pixels must be
// transformed to show the picture upright.
const (
	orientNormal     = 1 // as stored
	orientFlipH      = 2 // mirrored left-right
	orientRotate180  = 3
	orientFlipV      = 4 // mirrored top-bottom
	orientTranspose  = 5 // mirrored along the top-left to bottom-right diagonal
	orientRotate90   = 6 // turn 90° clockwise to show upright
	orientTransverse = 7 // mirrored along the top-right to bottom-left diagonal
	orientRotate270  = 8 // turn 90° counter-clockwise to show upright
)

const tagOrientation = 0x0112

var exifHeader = []byte("Exif\x00\x00")

// jpegOrientation returns the EXIF orientation (1 to 8) of a JPEG, or 1 when
// the file has no EXIF APP1 segment, no orientation tag, or one it cannot
// read. It walks the marker segments before the first scan; it never reads
// outside data and never panics.
func jpegOrientation(data []byte) int {
	o, err := jpegOrientationErr(data)
	if err != nil {
		return orientNormal
	}
	return o
}

var errNoOrientation = errors.New("no orientation tag")

func jpegOrientationErr(data []byte) (int, error) {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return 0, errors.New("not a JPEG")
	}
	i := 2
	for i+4 <= len(data) {
		if data[i] != 0xFF {
			return 0, fmt.Errorf("offset %d: no marker", i)
		}
		m := data[i+1]
		switch {
		case m == 0xFF: // fill byte
			i++
			continue
		case m == 0x01 || (m >= 0xD0 && m <= 0xD8): // markers without a length
			i += 2
			continue
		case m == 0xDA || m == 0xD9: // start of scan, end of image: metadata is over
			return 0, errNoOrientation
		}
		n := int(binary.BigEndian.Uint16(data[i+2:]))
		if n < 2 || i+2+n > len(data) {
			return 0, fmt.Errorf("offset %d: segment length %d past the end", i, n)
		}
		seg := data[i+4 : i+2+n]
		if m == 0xE1 && bytes.HasPrefix(seg, exifHeader) {
			return tiffOrientation(seg[len(exifHeader):])
		}
		i += 2 + n
	}
	return 0, errNoOrientation
}

// exifOrientation returns the EXIF orientation (1 to 8) of an image in the
// given format (image.DecodeConfig's name): a JPEG's APP1 segment, a PNG's
// eXIf chunk or a WebP's EXIF chunk; 1 for other formats and when there is
// none or it cannot be read.
func exifOrientation(format string, data []byte) int {
	var o int
	var err error
	switch format {
	case "jpeg":
		o, err = jpegOrientationErr(data)
	case "png":
		o, err = pngOrientation(data)
	case "webp":
		o, err = webpOrientation(data)
	default:
		return orientNormal
	}
	if err != nil {
		return orientNormal
	}
	return o
}

// pngOrientation reads the orientation in a PNG's eXIf chunk (a TIFF
// structure), walking the chunks by their lengths without checking CRCs.
func pngOrientation(data []byte) (int, error) {
	const sig = "\x89PNG\r\n\x1a\n"
	if !bytes.HasPrefix(data, []byte(sig)) {
		return 0, errors.New("not a PNG")
	}
	for i := uint64(len(sig)); i+8 <= uint64(len(data)); {
		n := uint64(binary.BigEndian.Uint32(data[i:]))
		typ := string(data[i+4 : i+8])
		end := i + 8 + n
		if end > uint64(len(data)) {
			return 0, fmt.Errorf("chunk %q of %d bytes past the end", typ, n)
		}
		switch typ {
		case "eXIf":
			return tiffOrientation(data[i+8 : end])
		case "IEND":
			return 0, errNoOrientation
		}
		i = end + 4 // the CRC
	}
	return 0, errNoOrientation
}

// webpOrientation reads the orientation in a WebP's EXIF chunk (a TIFF
// structure, which some writers prefix with "Exif\0\0").
func webpOrientation(data []byte) (int, error) {
	if len(data) < 12 || string(data[:4]) != "RIFF" || string(data[8:12]) != "WEBP" {
		return 0, errors.New("not a WebP")
	}
	for i := uint64(12); i+8 <= uint64(len(data)); {
		fcc := string(data[i : i+4])
		n := uint64(binary.LittleEndian.Uint32(data[i+4:]))
		end := i + 8 + n
		if end > uint64(len(data)) {
			return 0, fmt.Errorf("chunk %q of %d bytes past the end", fcc, n)
		}
		if fcc == "EXIF" {
			return tiffOrientation(bytes.TrimPrefix(data[i+8:end], exifHeader))
		}
		i = end + n%2 // chunks are padded to an even size
	}
	return 0, errNoOrientation
}

// tiffOrientation reads the orientation tag of IFD0 in a TIFF structure (the
// body of an EXIF segment).
func tiffOrientation(b []byte) (int, error) {
	if len(b) < 8 {
		return 0, errors.New("tiff header truncated")
	}
	var bo binary.ByteOrder
	switch string(b[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0, fmt.Errorf("tiff byte order %q", b[:2])
	}
	if bo.Uint16(b[2:]) != 42 {
		return 0, errors.New("tiff magic is not 42")
	}
	off := uint64(bo.Uint32(b[4:]))
	if off+2 > uint64(len(b)) {
		return 0, fmt.Errorf("ifd0 offset %d past the end", off)
	}
	count := uint64(bo.Uint16(b[off:]))
	for k := range count {
		e := off + 2 + 12*k
		if e+12 > uint64(len(b)) {
			return 0, fmt.Errorf("ifd0 entry %d past the end", k)
		}
		if bo.Uint16(b[e:]) != tagOrientation {
			continue
		}
		typ, n := bo.Uint16(b[e+2:]), bo.Uint32(b[e+4:])
		if typ != 3 || n != 1 { // one SHORT, stored in the entry itself
			return 0, fmt.Errorf("orientation tag of type %d, count %d", typ, n)
		}
		v := int(bo.Uint16(b[e+8:]))
		if v < orientNormal || v > orientRotate270 {
			return 0, fmt.Errorf("orientation %d", v)
		}
		return v, nil
	}
	return 0, errNoOrientation
}

// orientSquare returns the n x n RGBA pixels src (4 bytes a pixel) turned
// upright for EXIF orientation o, as 3-byte RGB. Orientation commutes with
// stretching, centre cropping and centred padding to a square, so turning
// the small resized square gives the same picture as turning the source.
func orientSquare(src []byte, n, o int) []byte {
	out := make([]byte, 0, n*n*Channels)
	for y := range n {
		for x := range n {
			sx, sy := x, y
			switch o {
			case orientFlipH:
				sx = n - 1 - x
			case orientRotate180:
				sx, sy = n-1-x, n-1-y
			case orientFlipV:
				sy = n - 1 - y
			case orientTranspose:
				sx, sy = y, x
			case orientRotate90:
				sx, sy = y, n-1-x
			case orientTransverse:
				sx, sy = n-1-y, n-1-x
			case orientRotate270:
				sx, sy = n-1-y, x
			}
			p := (sy*n + sx) * 4
			out = append(out, src[p], src[p+1], src[p+2])
		}
	}
	return out
}
