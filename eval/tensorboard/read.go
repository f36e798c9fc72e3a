package tensorboard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrCorrupt is a record whose framing or CRC is wrong, or an event that
// does not decode.
var ErrCorrupt = errors.New("tensorboard: corrupt event file")

// maxRecord bounds a record's length, so that a corrupt length does not
// make Parse allocate.
const maxRecord = 64 << 20

// ReadFile reads and decodes the event file at path (Parse).
func ReadFile(path string) ([]Event, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tensorboard: %w", err)
	}
	return Parse(b)
}

// Parse decodes every record of an event file, checking both CRCs of
// each, and the events in them (the fields Writer writes; others are
// skipped).
func Parse(b []byte) ([]Event, error) {
	var evs []Event
	for off := 0; off < len(b); {
		if len(b)-off < 12 {
			return evs, fmt.Errorf("%w: %d bytes at offset %d: a truncated record header", ErrCorrupt, len(b)-off, off)
		}
		hdr := b[off : off+8]
		if got, want := binary.LittleEndian.Uint32(b[off+8:]), MaskedCRC(hdr); got != want {
			return evs, fmt.Errorf("%w: length CRC %#08x at offset %d, want %#08x", ErrCorrupt, got, off, want)
		}
		n := binary.LittleEndian.Uint64(hdr)
		if n > maxRecord || uint64(len(b)-off-12) < n+4 {
			return evs, fmt.Errorf("%w: record of %d bytes at offset %d runs past the end", ErrCorrupt, n, off)
		}
		data := b[off+12 : off+12+int(n)]
		if got, want := binary.LittleEndian.Uint32(b[off+12+int(n):]), MaskedCRC(data); got != want {
			return evs, fmt.Errorf("%w: data CRC %#08x at offset %d, want %#08x", ErrCorrupt, got, off, want)
		}
		ev, err := decodeEvent(data)
		if err != nil {
			return evs, fmt.Errorf("%w: event at offset %d: %w", ErrCorrupt, off, err)
		}
		evs = append(evs, ev)
		off += 12 + int(n) + 4
	}
	return evs, nil
}

// fields calls fn with each field of the message b; fn's value is the
// varint or fixed value, or the bytes.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v uint64
		var bs []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v32 uint32
			v32, n = protowire.ConsumeFixed32(b)
			v = uint64(v32)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			bs, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, bs); err != nil {
			return err
		}
	}
	return nil
}

func decodeEvent(b []byte) (Event, error) {
	var ev Event
	err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		switch {
		case num == eventWallTime && typ == protowire.Fixed64Type:
			ev.WallTime = math.Float64frombits(v)
		case num == eventStep && typ == protowire.VarintType:
			ev.Step = int64(v)
		case num == eventFileVersion && typ == protowire.BytesType:
			ev.FileVersion = string(bs)
		case num == eventSummary && typ == protowire.BytesType:
			return fields(bs, func(num protowire.Number, typ protowire.Type, _ uint64, bs []byte) error {
				if num != summaryValue || typ != protowire.BytesType {
					return nil
				}
				var s Scalar
				simple := false
				err := fields(bs, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
					switch {
					case num == valueTag && typ == protowire.BytesType:
						s.Tag = string(bs)
					case num == valueSimpleValue && typ == protowire.Fixed32Type:
						s.Value, simple = float64(math.Float32frombits(uint32(v))), true
					}
					return nil
				})
				if err == nil && simple {
					ev.Scalars = append(ev.Scalars, s)
				}
				return err
			})
		case num == eventSessionLog && typ == protowire.BytesType:
			return fields(bs, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
				if num == sessionLogStatus && typ == protowire.VarintType {
					ev.SessionLog = int(v)
				}
				return nil
			})
		}
		return nil
	})
	return ev, err
}
