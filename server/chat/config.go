package chat

import (
	"fmt"
	"time"
)

// MaxBodyLimit is the highest MaxMessageBytes allowed. A message crosses
// hops that cap its whole envelope near 1 MB: the client's gRPC frame (this
// server reads at most 1 MiB) and its Kafka record (franz-go's default batch
// limit of 1,000,012 bytes; the broker's default max.message.bytes is
// 1,048,588). With the limit at 1 MiB a body of 1,000,000 bytes passed
// validation and went live, then franz-go refused its record
// (MESSAGE_TOO_LARGE), the message was withdrawn and the sender was told to
// retry, which could never succeed. Half a MiB leaves a wide margin for the
// rest of the message. Frames and pages of several messages are capped by
// bytes too (MaxBatchBytes).
const MaxBodyLimit = 512 << 10

// Config holds the chat limits. Zero values take the defaults.
type Config struct {
	// MaxMessageBytes bounds a message body (default 4096, at most
	// MaxBodyLimit).
	MaxMessageBytes int
	// StreamQueue bounds a stream's outgoing queue (default 1024 frames).
	StreamQueue int
	// DeliveryTick gathers live messages for this long before waking the
	// streams' writers (default 0: at once). A tick of about a millisecond
	// lets each connection write many streams' frames at once.
	DeliveryTick time.Duration
	// MaxRoomsPerStream bounds subscriptions on one stream (default 200).
	MaxRoomsPerStream int
	// SendRate and SendBurst limit sends per user on this instance
	// (default 20/s, burst 50).
	SendRate  float64
	SendBurst int
	// MaxStreamsPerUser bounds a user's open streams on this instance (default 20).
	MaxStreamsPerUser int
	// FrameRate and FrameBurst limit client frames per second on one
	// stream (default 50/s, burst 100); a stream over it is ended with
	// ResourceExhausted.
	FrameRate  float64
	FrameBurst int
	// MaxReplay bounds how many messages a resume replays before it tells the
	// client to resync from history instead (default 5000).
	MaxReplay int
	// EpochSeqGap is added to the highest stored seq when a room's lost
	// counter is re-created, leaving room for acknowledged messages still on
	// their way to the store (default 1,000,000).
	EpochSeqGap int64
	// SendTimeout bounds how long a send waits for Kafka's acknowledgement
	// (default 10s); past it the send fails with Unavailable. The Log must
	// fail a record still buffered after SendTimeout (msglog's record
	// delivery timeout is set to it), and the message is then withdrawn.
	SendTimeout time.Duration
	// MembershipTTL bounds how long a positive membership check is used
	// before it is refreshed in the background (default 5s); each refresh
	// comes at a random point of its second half.
	MembershipTTL time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 4096
	}
	if c.StreamQueue == 0 {
		c.StreamQueue = 1024
	}
	if c.MaxRoomsPerStream == 0 {
		c.MaxRoomsPerStream = 200
	}
	if c.SendRate == 0 {
		c.SendRate = 20
	}
	if c.SendBurst == 0 {
		c.SendBurst = 50
	}
	if c.MaxStreamsPerUser == 0 {
		c.MaxStreamsPerUser = 20
	}
	if c.FrameRate == 0 {
		c.FrameRate = 50
	}
	if c.FrameBurst == 0 {
		c.FrameBurst = 100
	}
	if c.MaxReplay == 0 {
		c.MaxReplay = 5000
	}
	if c.EpochSeqGap == 0 {
		c.EpochSeqGap = 1_000_000
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 10 * time.Second
	}
	if c.MembershipTTL == 0 {
		c.MembershipTTL = 5 * time.Second
	}
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.MaxMessageBytes < 1 || c.MaxMessageBytes > MaxBodyLimit:
		return fmt.Errorf("max message bytes must be 1..%d, got %d", MaxBodyLimit, c.MaxMessageBytes)
	case c.StreamQueue < 16:
		return fmt.Errorf("stream queue must be at least 16, got %d", c.StreamQueue)
	case c.DeliveryTick < 0 || c.DeliveryTick > 100*time.Millisecond:
		return fmt.Errorf("delivery tick must be 0..100ms, got %s", c.DeliveryTick)
	case c.MaxRoomsPerStream < 1:
		return fmt.Errorf("max rooms per stream must be positive, got %d", c.MaxRoomsPerStream)
	case c.SendRate <= 0 || c.SendBurst < 1:
		return fmt.Errorf("send rate and burst must be positive, got %v/%d", c.SendRate, c.SendBurst)
	case c.MaxStreamsPerUser < 1:
		return fmt.Errorf("max streams per user must be positive, got %d", c.MaxStreamsPerUser)
	case c.FrameRate <= 0 || c.FrameBurst < 1:
		return fmt.Errorf("frame rate and burst must be positive, got %v/%d", c.FrameRate, c.FrameBurst)
	case c.EpochSeqGap < 0:
		return fmt.Errorf("epoch seq gap must not be negative")
	case c.MembershipTTL < time.Millisecond:
		return fmt.Errorf("membership TTL must be at least 1ms, got %s", c.MembershipTTL)
	}
	return nil
}
