package wire

import (
	"context"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc"
)

func TestWorkMessagesRoundTrip(t *testing.T) {
	req := &WorkRequest{RunID: "r", WorkerID: "w1", Done: -1, Version: 7, Loss: 0.6931, Gen: 1 << 40}
	b, err := req.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got WorkRequest
	if err := got.UnmarshalBinary(b); err != nil || got != *req {
		t.Fatalf("request: %+v %v", got, err)
	}
	rep := &WorkReply{RunID: "r", WorkerID: "w1", Kind: WorkBatch, Step: 12, Epoch: 3, IDs: []uint64{5, 300, 2, 4095, 1 << 40}, Offset: 64, Gen: 3}
	b, err = rep.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var gr WorkReply
	if err := gr.UnmarshalBinary(b); err != nil || !reflect.DeepEqual(&gr, rep) {
		t.Fatalf("reply: %+v %v", gr, err)
	}
	for _, bad := range [][]byte{nil, b[:3], append([]byte{0xA7, byte(TypeWorkRequest)}, b[2:]...), append(b, 1)} {
		var r WorkReply
		if err := r.UnmarshalBinary(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%x: %v", bad, err)
		}
	}
}

func FuzzWorkReply(f *testing.F) {
	rep := &WorkReply{RunID: "r", WorkerID: "w", Kind: WorkWait, Step: 1, IDs: []uint64{1, 2}}
	b, _ := rep.MarshalBinary()
	f.Add(b)
	req := &WorkRequest{RunID: "r", WorkerID: "w", Done: 3}
	b2, _ := req.MarshalBinary()
	f.Add(b2)
	f.Fuzz(func(t *testing.T, data []byte) {
		var r WorkReply
		if r.UnmarshalBinary(data) == nil {
			if _, err := r.MarshalBinary(); err != nil {
				t.Fatalf("decoded reply does not encode: %v", err)
			}
		}
		var q WorkRequest
		_ = q.UnmarshalBinary(data)
	})
}

type echoWork struct{}

func (echoWork) ReduceBN(ctx context.Context, req *BNRequest) (*BNReply, error) {
	return &BNReply{RunID: req.RunID, WorkerID: req.WorkerID, Step: req.Step, Slot: req.Slot, Values: req.Values, Workers: 1}, nil
}

func (echoWork) Next(ctx context.Context, req *WorkRequest) (*WorkReply, error) {
	return &WorkReply{RunID: req.RunID, WorkerID: req.WorkerID, Kind: WorkBatch, Step: req.Done + 1, IDs: []uint64{uint64(req.Version)}}, nil
}

func TestWorkService(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(ServerOptions(nil, "")...)
	RegisterWork(s, echoWork{})
	go s.Serve(lis)
	defer s.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), DialOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := NewWorkClient(conn).Next(ctx, &WorkRequest{RunID: "r", WorkerID: "w", Done: 4, Version: 9})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Step != 5 || rep.IDs[0] != 9 {
		t.Errorf("reply %+v", rep)
	}
}
