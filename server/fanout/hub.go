package fanout

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	eventsv1 "github.com/parleychat/parley/gen/go/parley/events/v1"
)

// Subscriber receives a room's events on this instance.
type Subscriber interface {
	// Deliver hands over an event of roomID. It must not block; ev is shared
	// between subscribers and must not be modified.
	Deliver(roomID string, ev *eventsv1.RoomEvent)
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

// Dispatch delivers ev to every local subscriber of roomID.
func (h *Hub) Dispatch(roomID string, ev *eventsv1.RoomEvent) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	subs := h.rooms[roomID]
	if len(subs) == 0 {
		h.dropped.Inc()
		return
	}
	for s := range subs {
		s.Deliver(roomID, ev)
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
