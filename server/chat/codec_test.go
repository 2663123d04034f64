package chat

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/fanout"
)

func liveEvent(tb testing.TB, room, epoch string, seq int64) *fanout.Event {
	tb.Helper()
	ev, err := fanout.NewEvent(room, &eventsv1.RoomEvent{Event: &eventsv1.RoomEvent_Message{Message: &parleyv1.Message{
		MessageId: fmt.Sprint("m", seq), RoomId: room, Epoch: epoch, Seq: seq, Body: "hi"}}})
	if err != nil {
		tb.Fatal(err)
	}
	return ev
}

// recordingSession is a session whose frames are decoded into a slice.
func recordingSession(tb testing.TB, batches bool) (*session, *[]*parleyv1.ConnectResponse) {
	var got []*parleyv1.ConnectResponse
	ss := &session{}
	ss.batches.Store(batches)
	ss.send = func(f *parleyv1.ConnectResponse) error { got = append(got, f); return nil }
	ss.sendRaw = func(b EncodedFrame) error {
		f := &parleyv1.ConnectResponse{}
		if err := proto.Unmarshal(b.Bytes(), f); err != nil {
			tb.Fatalf("pre-encoded frame does not decode: %v", err)
		}
		got = append(got, f)
		return nil
	}
	return ss, &got
}

func TestFrameFieldNumbers(t *testing.T) {
	field := func(m proto.Message, name protoreflect.Name) protoreflect.FieldNumber {
		return m.ProtoReflect().Descriptor().Fields().ByName(name).Number()
	}
	for _, c := range []struct {
		what      string
		used, gen protoreflect.FieldNumber
	}{
		{"ConnectResponse.message", fieldMessage, field(&parleyv1.ConnectResponse{}, "message")},
		{"ConnectResponse.message_batch", fieldMessageBatch, field(&parleyv1.ConnectResponse{}, "message_batch")},
		{"MessageBatch.messages", fieldBatchItem, field(&parleyv1.MessageBatch{}, "messages")},
		// messageFrameOf sends a RoomEvent's message field as a ConnectResponse.
		{"RoomEvent.message", fieldMessage, field(&eventsv1.RoomEvent{}, "message")},
	} {
		if c.used != c.gen {
			t.Errorf("%s: the frame builders use field %d, the generated code says %d", c.what, c.used, c.gen)
		}
	}
	// ...and both message fields hold the same message type.
	ev := (&eventsv1.RoomEvent{}).ProtoReflect().Descriptor().Fields().ByName("message").Message().FullName()
	cr := (&parleyv1.ConnectResponse{}).ProtoReflect().Descriptor().Fields().ByName("message").Message().FullName()
	if ev != cr {
		t.Errorf("RoomEvent.message is a %s, ConnectResponse.message a %s", ev, cr)
	}
}

func TestMessageFrameOfAnEvent(t *testing.T) {
	built := liveEvent(t, "r", "e", 1)
	payload, err := proto.Marshal(built.RoomEvent)
	if err != nil {
		t.Fatal(err)
	}
	received, err := fanout.DecodeEvent("r", payload)
	if err != nil {
		t.Fatal(err)
	}
	for name, ev := range map[string]*fanout.Event{"built": built, "received": received, "without field": {Room: "r", RoomEvent: built.RoomEvent, MessageBytes: built.MessageBytes}} {
		f := &parleyv1.ConnectResponse{}
		if err := proto.Unmarshal(messageFrameOf(ev).Bytes(), f); err != nil || !proto.Equal(f.GetMessage(), built.GetMessage()) {
			t.Errorf("%s event: frame = %v, %v", name, f, err)
		}
	}
	if &messageFrameOf(received).Bytes()[0] != &payload[0] {
		t.Error("a received event's frame is a copy of its payload, want the payload itself")
	}
}

func TestEncodedFramesDecodeAsConnectResponses(t *testing.T) {
	ev := liveEvent(t, "r", "e", 1)
	f := &parleyv1.ConnectResponse{}
	if err := proto.Unmarshal(MessageFrame(ev.MessageBytes).Bytes(), f); err != nil || !proto.Equal(f.GetMessage(), ev.GetMessage()) {
		t.Fatalf("message frame = %v, %v", f, err)
	}
	ev2 := liveEvent(t, "r", "e", 2)
	if err := proto.Unmarshal(BatchFrame([][]byte{ev.MessageBytes, ev2.MessageBytes}).Bytes(), f); err != nil {
		t.Fatal(err)
	}
	if ms := f.GetMessageBatch().GetMessages(); len(ms) != 2 || !proto.Equal(ms[0], ev.GetMessage()) || !proto.Equal(ms[1], ev2.GetMessage()) {
		t.Fatalf("batch frame = %v", f)
	}
}

func TestHandleAllCoalescesQueuedMessages(t *testing.T) {
	for _, batches := range []bool{false, true} {
		t.Run(fmt.Sprintf("batches=%v", batches), func(t *testing.T) {
			ss, got := recordingSession(t, batches)
			rooms := map[string]*roomState{"r": {epoch: "e1", last: 2}, "q": {epoch: "e1", last: 0}}
			items := []item{
				{ev: liveEvent(t, "r", "e1", 2)}, // already sent: dropped
				{ev: liveEvent(t, "r", "e1", 3)},
				{ev: liveEvent(t, "q", "e1", 1)},
				{ev: liveEvent(t, "x", "e1", 1)}, // not subscribed: dropped
				{ev: liveEvent(t, "r", "e1", 4)},
				{frame: &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_Pong{Pong: &parleyv1.Pong{Nonce: 7}}}},
				{ev: liveEvent(t, "r", "e1", 5)},
				{ev: liveEvent(t, "r", "e1", 6)},
			}
			ss.wrooms = rooms
			if err := ss.handleAll(items); err != nil {
				t.Fatal(err)
			}
			var kinds, order []string
			for _, f := range *got {
				switch {
				case f.GetMessage() != nil:
					kinds = append(kinds, "m")
					order = append(order, fmt.Sprintf("%s%d", f.GetMessage().RoomId, f.GetMessage().Seq))
				case f.GetMessageBatch() != nil:
					kinds = append(kinds, fmt.Sprintf("b%d", len(f.GetMessageBatch().Messages)))
					for _, m := range f.GetMessageBatch().Messages {
						order = append(order, fmt.Sprintf("%s%d", m.RoomId, m.Seq))
					}
				case f.GetPong() != nil:
					kinds = append(kinds, "pong")
				case f.GetResyncRequired() != nil:
					kinds = append(kinds, "resync")
				}
			}
			want := "m m m pong m m"
			if batches {
				want = "b3 pong b2"
			}
			if fmt.Sprint(order) != "[r3 q1 r4 r5 r6]" || fmt.Sprint(kinds) != "["+want+"]" {
				t.Fatalf("frames %v carrying %v; want [%s] carrying [r3 q1 r4 r5 r6]", kinds, order, want)
			}
			if st := rooms["r"]; st.epoch != "e1" || st.last != 6 {
				t.Fatalf("room position %+v", st)
			}
		})
	}
}

// A Connect frame that is not a valid ConnectRequest (here: a room id that
// is not UTF-8) ends the stream with InvalidArgument naming the problem,
// not with grpc's Internal.
func TestMalformedConnectFrameIsInvalidArgument(t *testing.T) {
	e := newTestEnv(t, Config{})
	s, err := e.conn.NewStream(e.ctx("a"), &parleyv1.ChatService_ServiceDesc.Streams[0], parleyv1.ChatService_Connect_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	sub := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0xff, 0xfe})
	frame := rawBytes(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), sub)) // ConnectRequest.subscribe
	if err := s.SendMsg(&frame); err != nil {
		t.Fatal(err)
	}
	var got rawBytes
	err = s.RecvMsg(&got)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "ConnectRequest") {
		t.Fatalf("stream ended with %v, want InvalidArgument about the ConnectRequest", err)
	}
}
