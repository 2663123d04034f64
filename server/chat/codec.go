package chat

import (
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/fanout"
)

// Codec is the server's gRPC codec: protobuf, except that an EncodedFrame is
// written as it is. A live message is encoded once per instance (it arrives
// encoded from the broker) and its ConnectResponse frame is built around
// those bytes for every stream, instead of marshalling the same message once
// per stream. Install it with grpc.ForceServerCodecV2(chat.NewCodec()).
type Codec struct{ proto encoding.CodecV2 }

// NewCodec returns the codec, delegating everything else to gRPC's protobuf codec.
func NewCodec() Codec { return Codec{proto: encoding.GetCodecV2(protocodec.Name)} }

// EncodedFrame is a ConnectResponse already in its wire form. It is a
// pointer-shaped struct so that passing it to SendMsg as an interface does
// not allocate.
type EncodedFrame struct{ b *[]byte }

// Bytes returns the frame's encoding.
func (f EncodedFrame) Bytes() []byte { return *f.b }

// Marshal implements encoding.CodecV2.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(EncodedFrame); ok {
		return mem.BufferSlice{mem.SliceBuffer(*f.b)}, nil
	}
	return c.proto.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*rawFrame); ok {
		f.b = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// rawFrame receives a request frame undecoded. Connect decodes it after
// RecvMsg has returned: deep in grpc's receive path the decoder would grow
// the stream handler's stack past 8 KiB, and the stack of a goroutine that
// then parks in Recv for hours is never shrunk back (conns-v1: 16 instead
// of 8 KiB per idle stream). Decoding in the handler also gives a malformed
// frame InvalidArgument instead of grpc's Internal.
type rawFrame struct{ b []byte }

// Name implements encoding.CodecV2: it is the protobuf codec on the wire.
func (c Codec) Name() string { return protocodec.Name }

// ConnectResponse field numbers used by the frame builders below; a test
// checks them against the generated code.
const (
	fieldMessage      protowire.Number = 1  // ConnectResponse.message
	fieldMessageBatch protowire.Number = 11 // ConnectResponse.message_batch
	fieldBatchItem    protowire.Number = 1  // MessageBatch.messages
)

// MessageFrame returns ConnectResponse{message: m} given m's encoding.
func MessageFrame(m []byte) EncodedFrame {
	buf := make([]byte, 0, protowire.SizeTag(fieldMessage)+protowire.SizeBytes(len(m)))
	buf = protowire.AppendTag(buf, fieldMessage, protowire.BytesType)
	buf = protowire.AppendBytes(buf, m)
	return EncodedFrame{&buf}
}

// messageFrameOf returns ConnectResponse{message: ev's message}: the
// event's RoomEvent.message field is that frame as it is (both fields are
// number 1; a test checks), so every stream sends the same bytes and a
// delivery allocates nothing (a copy per stream was 19 % of the server's
// steady allocated bytes at fanout-v1's 5,000 msgs/s).
func messageFrameOf(ev *fanout.Event) EncodedFrame {
	if ev.MessageField != nil {
		return EncodedFrame{&ev.MessageField}
	}
	return MessageFrame(ev.MessageBytes)
}

// BatchFrame returns ConnectResponse{message_batch: {messages: msgs}} given
// the messages' encodings.
func BatchFrame(msgs [][]byte) EncodedFrame {
	n := 0
	for _, m := range msgs {
		n += protowire.SizeTag(fieldBatchItem) + protowire.SizeBytes(len(m))
	}
	buf := make([]byte, 0, protowire.SizeTag(fieldMessageBatch)+protowire.SizeBytes(n))
	buf = protowire.AppendTag(buf, fieldMessageBatch, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(n))
	for _, m := range msgs {
		buf = protowire.AppendTag(buf, fieldBatchItem, protowire.BytesType)
		buf = protowire.AppendBytes(buf, m)
	}
	return EncodedFrame{&buf}
}

// batchOf wraps already decoded messages (a replay) as one frame.
func batchOf(msgs []*parleyv1.Message) *parleyv1.ConnectResponse {
	return &parleyv1.ConnectResponse{Frame: &parleyv1.ConnectResponse_MessageBatch{MessageBatch: &parleyv1.MessageBatch{Messages: msgs}}}
}
