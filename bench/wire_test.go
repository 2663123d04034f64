package bench

import (
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

func TestWireFieldNumbers(t *testing.T) {
	fields := func(m proto.Message) protoreflect.FieldDescriptors { return m.ProtoReflect().Descriptor().Fields() }
	for _, c := range []struct {
		got  protoreflect.FieldNumber
		want protoreflect.FieldDescriptor
	}{
		{wireMessage, fields(&parleyv1.ConnectResponse{}).ByName("message")},
		{wireMessageBatch, fields(&parleyv1.ConnectResponse{}).ByName("message_batch")},
		{wireBatchItem, fields(&parleyv1.MessageBatch{}).ByName("messages")},
		{wireBody, fields(&parleyv1.Message{}).ByName("body")},
		{wireSeq, fields(&parleyv1.Message{}).ByName("seq")},
		{wireSendAck, fields(&parleyv1.ConnectResponse{}).ByName("send_ack")},
		{wireAckClientID, fields(&parleyv1.SendAck{}).ByName("client_msg_id")},
		{wireAckError, fields(&parleyv1.SendAck{}).ByName("error")},
	} {
		if c.got != c.want.Number() {
			t.Errorf("%s: decoder uses field %d, generated code says %d", c.want.FullName(), c.got, c.want.Number())
		}
	}
}

func TestBodyOnlyCodec(t *testing.T) {
	full := func(body string) *parleyv1.Message {
		return &parleyv1.Message{MessageId: "01J", RoomId: "r1", Epoch: "e", Seq: 7, SenderId: "u", SenderUsername: "ann",
			ClientMsgId: "c1", Body: body, CreateTime: timestamppb.Now()}
	}
	codec := newBodyOnlyCodec()
	decode := func(t *testing.T, in *parleyv1.ConnectResponse) *parleyv1.ConnectResponse {
		t.Helper()
		b, err := proto.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		out := &parleyv1.ConnectResponse{}
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, out); err != nil {
			t.Fatal(err)
		}
		return out
	}

	got := decode(t, &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Message{Message: full("héllo|1")}})
	if want := (&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Message{Message: &parleyv1.Message{Body: "héllo|1", Seq: 7}}}); !proto.Equal(got, want) {
		t.Errorf("message frame: got %v, want %v", got, want)
	}

	got = decode(t, &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_MessageBatch{MessageBatch: &parleyv1.MessageBatch{
		Messages: []*parleyv1.Message{full("a"), full(""), full("c")}}}})
	want := &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_MessageBatch{MessageBatch: &parleyv1.MessageBatch{
		Messages: []*parleyv1.Message{{Body: "a", Seq: 7}, {Seq: 7}, {Body: "c", Seq: 7}}}}}
	if !proto.Equal(got, want) {
		t.Errorf("batch frame: got %v, want %v", got, want)
	}

	// An ack without the message it carries.
	got = decode(t, &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SendAck{SendAck: &parleyv1.SendAck{
		ClientMsgId: "c1", Message: full("x"), Error: &parleyv1.Status{Code: 8, Message: "slow down"}}}})
	wantAck := &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_SendAck{SendAck: &parleyv1.SendAck{
		ClientMsgId: "c1", Error: &parleyv1.Status{Code: 8, Message: "slow down"}}}}
	if !proto.Equal(got, wantAck) {
		t.Errorf("ack frame: got %v, want %v", got, wantAck)
	}

	// Every other frame is decoded in full.
	sub := &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Subscribed{Subscribed: &parleyv1.Subscribed{
		RoomId: "r1", Head: &parleyv1.RoomPosition{Epoch: "e", Seq: 9}}}}
	if got := decode(t, sub); !proto.Equal(got, sub) {
		t.Errorf("subscribed frame: got %v, want %v", got, sub)
	}

	// A truncated frame is an error, not a silently empty message.
	b, _ := proto.Marshal(&parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_MessageBatch{MessageBatch: &parleyv1.MessageBatch{
		Messages: []*parleyv1.Message{full("a")}}}})
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:len(b)-3])}, &parleyv1.ConnectResponse{}); err == nil {
		t.Error("truncated batch frame decoded without error")
	}
}

func TestBitset(t *testing.T) {
	var b bitset
	for _, n := range []int64{0, 1, 63, 64, 1000, 5} {
		if b.testAndSet(n) {
			t.Fatalf("%d reported present before it was added", n)
		}
	}
	for _, n := range []int64{0, 1, 63, 64, 1000, 5} {
		if !b.testAndSet(n) {
			t.Fatalf("%d missing after it was added", n)
		}
	}
	if b.testAndSet(2) || b.testAndSet(999) || b.testAndSet(-1) || b.testAndSet(-1) {
		t.Fatal("a seq never added reported present")
	}
}
