package wire

import (
	"math"
	"testing"
)

// BatchNorm messages that break the rules are refused by the encoder, and
// the same bytes (built by hand) by the decoder.
func TestBNInvalid(t *testing.T) {
	ok := []float64{1, 2, 3}
	for _, tc := range []struct {
		name string
		m    message
	}{
		{"no values", &BNRequest{RunID: "r", WorkerID: "w"}},
		{"too many values", &BNRequest{RunID: "r", WorkerID: "w", Values: make([]float64, MaxBNValues+1)}},
		{"NaN", &BNRequest{RunID: "r", WorkerID: "w", Values: []float64{1, math.NaN()}}},
		{"Inf", &BNRequest{RunID: "r", WorkerID: "w", Values: []float64{math.Inf(-1)}}},
		{"negative step", &BNRequest{RunID: "r", WorkerID: "w", Step: -1, Values: ok}},
		{"negative slot", &BNRequest{RunID: "r", WorkerID: "w", Slot: -1, Values: ok}},
		{"long worker id", &BNRequest{RunID: "r", WorkerID: string(make([]byte, MaxStringBytes+1)), Values: ok}},
		{"reply of nobody", &BNReply{RunID: "r", WorkerID: "w", Values: ok}},
		{"reply NaN", &BNReply{RunID: "r", WorkerID: "w", Values: []float64{math.NaN()}, Workers: 1}},
	} {
		if _, err := tc.m.marshal(); err == nil {
			t.Errorf("%s: marshalled", tc.name)
		}
		b := encodeBNUnchecked(tc.m)
		if b == nil {
			continue
		}
		if err := fresh(tc.m).unmarshal(oneBuffer(b)); err == nil {
			t.Errorf("%s: decoded", tc.name)
		}
	}
}

// encodeBNUnchecked encodes a BatchNorm message without checking it, or
// returns nil where the encoding itself cannot hold it.
func encodeBNUnchecked(m message) []byte {
	var h []byte
	switch r := m.(type) {
	case *BNRequest:
		if len(r.WorkerID) > MaxStringBytes || r.Slot < 0 || len(r.Values) > MaxBNValues {
			return nil
		}
		h = beginHeader(TypeBNRequest, 64)
		h = appendString(h, r.RunID)
		h = appendString(h, r.WorkerID)
		h = appendUvarint(h, r.Gen)
		h = appendVarint(h, r.Step)
		h = appendUvarint(h, uint64(r.Slot))
		h = appendFloats64(h, r.Values)
	case *BNReply:
		h = beginHeader(TypeBNReply, 64)
		h = appendString(h, r.RunID)
		h = appendString(h, r.WorkerID)
		h = appendVarint(h, r.Step)
		h = appendUvarint(h, uint64(r.Slot))
		h = appendFloats64(h, r.Values)
		h = appendUvarint(h, uint64(r.Workers))
	default:
		return nil
	}
	h, err := finishHeader(h)
	if err != nil {
		return nil
	}
	return h
}
