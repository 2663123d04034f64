package fanout

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
)

// Event is one room event as this instance received it; the same Event is
// handed to every local subscriber of the room and must not be modified.
type Event struct {
	Room string
	*eventsv1.RoomEvent
	// MessageBytes is the wire encoding of RoomEvent.message (nil for other
	// events), cut out of the broker's payload, so that subscribers forward
	// a message without encoding it once per stream.
	MessageBytes []byte
	// MessageField is the whole encoding of the RoomEvent.message field:
	// its tag (field 1, bytes), length and MessageBytes (nil for other
	// events). For an event received from the broker it is the payload
	// itself; NewEvent builds it. Any message type whose field 1 is a
	// parley.v1.Message can forward it as is.
	MessageField []byte
}

// NewEvent returns the Event for ev of room, encoding its message if any.
// Events received from the broker use DecodeEvent instead.
func NewEvent(room string, ev *eventsv1.RoomEvent) (*Event, error) {
	e := &Event{Room: room, RoomEvent: ev}
	if m := ev.GetMessage(); m != nil {
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		f := make([]byte, 0, protowire.SizeTag(1)+protowire.SizeBytes(len(b)))
		f = protowire.AppendTag(f, 1, protowire.BytesType)
		f = protowire.AppendBytes(f, b)
		e.MessageField, e.MessageBytes = f, f[len(f)-len(b):]
	}
	return e, nil
}

// DecodeEvent decodes a RoomEvent payload of room. A message's bytes are
// taken from the payload itself when it holds nothing but the message field.
func DecodeEvent(room string, payload []byte) (*Event, error) {
	ev := &eventsv1.RoomEvent{}
	if err := proto.Unmarshal(payload, ev); err != nil {
		return nil, err
	}
	if ev.GetMessage() == nil {
		return &Event{Room: room, RoomEvent: ev}, nil
	}
	if num, typ, n := protowire.ConsumeTag(payload); n > 0 && num == 1 && typ == protowire.BytesType {
		if v, m := protowire.ConsumeBytes(payload[n:]); m > 0 && n+m == len(payload) {
			return &Event{Room: room, RoomEvent: ev, MessageBytes: v, MessageField: payload}, nil
		}
	}
	return NewEvent(room, ev)
}

// Subscriber receives a room's events on this instance.
type Subscriber interface {
	// Deliver hands over an event. It must not block; ev is shared between
	// subscribers and must not be modified.
	Deliver(ev *Event)
	// Resync says events may have been missed (the broker subscription was
	// interrupted); the subscriber should catch up from its last position.
	Resync()
}

// Hub maps rooms to this instance's subscribers. It is safe for concurrent use.
type Hub struct {
	mu    sync.RWMutex
	rooms map[string]map[Subscriber]struct{}

	delivered prometheus.Counter
	dropped   prometheus.Counter
	roomsG    prometheus.Gauge
}

// NewHub returns an empty Hub registering its metrics on reg.
func NewHub(reg prometheus.Registerer) *Hub {
	h := &Hub{
		rooms: make(map[string]map[Subscriber]struct{}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "parley", Subsystem: "fanout",
			Name: "deliveries_total", Help: "Events handed to local subscribers."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "parley", Subsystem: "fanout",
			Name: "events_without_subscriber_total", Help: "Events received for rooms with no local subscriber."}),
		roomsG: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "parley", Subsystem: "fanout",
			Name: "rooms", Help: "Rooms with at least one local subscriber."}),
	}
	reg.MustRegister(h.delivered, h.dropped, h.roomsG)
	return h
}

// Add subscribes s to roomID (idempotent).
func (h *Hub) Add(roomID string, s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.rooms[roomID]
	if subs == nil {
		subs = make(map[Subscriber]struct{})
		h.rooms[roomID] = subs
		h.roomsG.Inc()
	}
	subs[s] = struct{}{}
}

// Remove unsubscribes s from roomID (idempotent).
func (h *Hub) Remove(roomID string, s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.rooms[roomID]
	if subs == nil {
		return
	}
	delete(subs, s)
	if len(subs) == 0 {
		delete(h.rooms, roomID)
		h.roomsG.Dec()
	}
}

// Dispatch delivers ev to every local subscriber of its room.
func (h *Hub) Dispatch(ev *Event) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	subs := h.rooms[ev.Room]
	if len(subs) == 0 {
		h.dropped.Inc()
		return
	}
	for s := range subs {
		s.Deliver(ev)
	}
	h.delivered.Add(float64(len(subs)))
}

// Rooms returns the rooms with at least one local subscriber.
func (h *Hub) Rooms() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.rooms))
	for r := range h.rooms {
		out = append(out, r)
	}
	return out
}

// ResyncAll calls Resync on every subscriber (once each).
func (h *Hub) ResyncAll() {
	h.mu.RLock()
	seen := make(map[Subscriber]struct{})
	for _, subs := range h.rooms {
		for s := range subs {
			seen[s] = struct{}{}
		}
	}
	h.mu.RUnlock()
	for s := range seen {
		s.Resync()
	}
}
