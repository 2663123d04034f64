// Package mongometrics times every command a mongo-driver client sends
// (parley_mongo_command_duration_seconds{command,result}).
package mongometrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/event"
)

// Monitor returns a command monitor that records each command's duration
// on reg. Register it with options.Client().SetMonitor.
func Monitor(reg prometheus.Registerer) *event.CommandMonitor {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "parley", Subsystem: "mongo", Name: "command_duration_seconds",
		Help:    "MongoDB-protocol store commands by name and result.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 12),
	}, []string{"command", "result"})
	if err := reg.Register(h); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			h = are.ExistingCollector.(*prometheus.HistogramVec)
		}
	}
	return &event.CommandMonitor{
		Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) {
			h.WithLabelValues(e.CommandName, "ok").Observe(e.Duration.Seconds())
		},
		Failed: func(_ context.Context, e *event.CommandFailedEvent) {
			h.WithLabelValues(e.CommandName, "error").Observe(e.Duration.Seconds())
		},
	}
}
