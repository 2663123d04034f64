package bench

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// bodyOnlyCodec is the load generator's codec for member streams (a call
// option of the generated client's Connect). Message and MessageBatch frames
// are decoded into the generated types with only Message.body and seq filled
// in: the body is all the measurement reads (step, seq, send time), the seq
// is where a stream resumes after a slow-consumer disconnect, and decoding
// every field of every delivered message was 19 % of the load generator's
// CPU at 5,000 msgs/s, CPU that the server under test did not get on the
// same two cores. A SendAck gets its client_msg_id and error but not the
// message it carries; every other frame (Subscribed, errors) is decoded in
// full. Parley's clients decode whole frames; --full-decode measures with
// the generated client's own codec.
type bodyOnlyCodec struct{ proto encoding.CodecV2 }

func newBodyOnlyCodec() bodyOnlyCodec {
	return bodyOnlyCodec{proto: encoding.GetCodecV2(protocodec.Name)}
}

// Name implements encoding.CodecV2: protobuf on the wire.
func (bodyOnlyCodec) Name() string { return protocodec.Name }

// Marshal implements encoding.CodecV2.
func (c bodyOnlyCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

// Unmarshal implements encoding.CodecV2.
func (c bodyOnlyCodec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*parleyv1.ConnectResponse)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	done, err := decodeDeliveries(buf.ReadOnlyData(), resp)
	if err != nil || done {
		return err
	}
	return c.proto.Unmarshal(data, v)
}

// ConnectResponse and Message field numbers read here (a test checks them
// against the generated code).
const (
	wireMessage      protowire.Number = 1  // ConnectResponse.message
	wireMessageBatch protowire.Number = 11 // ConnectResponse.message_batch
	wireBatchItem    protowire.Number = 1  // MessageBatch.messages
	wireBody         protowire.Number = 8  // Message.body
	wireSeq          protowire.Number = 4  // Message.seq
	wireSendAck      protowire.Number = 2  // ConnectResponse.send_ack
	wireAckClientID  protowire.Number = 1  // SendAck.client_msg_id
	wireAckError     protowire.Number = 3  // SendAck.error
)

// decodeDeliveries fills resp from b when b is a Message or MessageBatch
// frame (bodies only) and reports whether it did.
func decodeDeliveries(b []byte, resp *parleyv1.ConnectResponse) (bool, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || typ != protowire.BytesType || (num != wireMessage && num != wireMessageBatch && num != wireSendAck) {
		return false, nil
	}
	inner, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return false, nil // not a single-field frame: leave it to the full decoder
	}
	switch num {
	case wireSendAck:
		ack, err := decodeAck(inner)
		if err != nil {
			return false, err
		}
		resp.Frame = &parleyv1.ConnectResponse_SendAck{SendAck: ack}
		return true, nil
	case wireMessage:
		msg, err := decodeBody(inner)
		if err != nil {
			return false, err
		}
		resp.Frame = &parleyv1.ConnectResponse_Message{Message: msg}
		return true, nil
	}
	batch := &parleyv1.MessageBatch{}
	err := bytesFields(inner, "message batch", func(num protowire.Number, v []byte) error {
		if num != wireBatchItem {
			return nil
		}
		msg, err := decodeBody(v)
		batch.Messages = append(batch.Messages, msg)
		return err
	})
	if err != nil {
		return false, err
	}
	resp.Frame = &parleyv1.ConnectResponse_MessageBatch{MessageBatch: batch}
	return true, nil
}

// bytesFields calls f with the number and value of each length-delimited
// field of the message b, skipping the others.
func bytesFields(b []byte, what string, f func(num protowire.Number, v []byte) error) error {
	return fields(b, what, f, nil)
}

// fields is bytesFields that also calls varint, when not nil, with each
// varint field.
func fields(b []byte, what string, f func(num protowire.Number, v []byte) error, varint func(num protowire.Number, v uint64)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%s: %w", what, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.VarintType && varint != nil {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%s: %w", what, protowire.ParseError(n))
			}
			b = b[n:]
			varint(num, v)
			continue
		}
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return fmt.Errorf("%s: %w", what, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fmt.Errorf("%s: %w", what, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, v); err != nil {
			return err
		}
	}
	return nil
}

// decodeAck returns a SendAck without its message.
func decodeAck(b []byte) (*parleyv1.SendAck, error) {
	ack := &parleyv1.SendAck{}
	err := bytesFields(b, "send ack", func(num protowire.Number, v []byte) error {
		switch num {
		case wireAckClientID:
			ack.ClientMsgId = string(v)
		case wireAckError:
			ack.Error = &parleyv1.Status{}
			if err := proto.Unmarshal(v, ack.Error); err != nil {
				return fmt.Errorf("send ack error: %w", err)
			}
		}
		return nil
	})
	return ack, err
}

// decodeBody returns a Message with only its body and seq set.
func decodeBody(b []byte) (*parleyv1.Message, error) {
	msg := &parleyv1.Message{}
	err := fields(b, "message", func(num protowire.Number, v []byte) error {
		if num == wireBody {
			msg.Body = string(v)
		}
		return nil
	}, func(num protowire.Number, v uint64) {
		if num == wireSeq {
			msg.Seq = int64(v)
		}
	})
	return msg, err
}
