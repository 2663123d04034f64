package main

import (
	"context"
	"strings"
	"testing"
)

// TestPersisterFlags: bad persister flags fail before anything is dialled,
// with a message naming the flag.
func TestPersisterFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-fetch-min-bytes", "0"}, "fetch-min-bytes: 0 is outside"},
		{[]string{"-fetch-min-bytes", "2000000000"}, "fetch-min-bytes: 2000000000 is outside"},
		{[]string{"-fetch-max-wait", "-1s"}, "Config.FetchMaxWait"},
		{[]string{"-insert-in-flight", "0"}, "insert-in-flight: 0 is not positive"},
	} {
		err := runPersister(context.Background(), append(tt.args, "-metrics-addr", ""))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.want)
		}
	}
}
