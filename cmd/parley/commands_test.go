package main

import (
	"context"
	"strings"
	"testing"
)

// TestPersisterFlags: bad persister flags fail at once with a message
// naming the flag.
func TestPersisterFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-fetch-min-bytes", "0"}, "fetch-min-bytes: 0 is outside 1..1048576"},
		{[]string{"-fetch-min-bytes", "1048577"}, "fetch-min-bytes: 1048577 is outside"},
		{[]string{"-fetch-max-wait", "-1s"}, "fetch-max-wait: -1s is outside 10ms..5s"},
		{[]string{"-fetch-max-wait", "5ms"}, "fetch-max-wait: 5ms is outside"},
		{[]string{"-fetch-max-wait", "6s"}, "fetch-max-wait: 6s is outside"},
		{[]string{"-insert-in-flight", "0"}, "insert-in-flight: 0 is not positive"},
		{[]string{"-insert-linger", "2s"}, "insert-linger: 2s is outside 0..1s"},
		{[]string{"-insert-linger", "-1ms"}, "insert-linger: -1ms is outside 0..1s"},
		{[]string{"-pprof", "-metrics-addr", ""}, "pprof: needs metrics-addr"},
	} {
		// An unroutable store and broker, so that no case reaches a real
		// service (mongo.Connect dials in the background, so the order of
		// the checks and the connect is not observable here).
		args := append([]string{"-mongo-uri", "mongodb://192.0.2.1:1", "-kafka-brokers", "192.0.2.1:1"}, tt.args...)
		err := runPersister(context.Background(), args)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.want)
		}
	}
}
