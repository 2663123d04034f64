package apidocs

import "testing"

func TestAllow(t *testing.T) {
	for _, tt := range []struct{ path, want string }{
		{"/v1/me", "GET"},
		{"/v1/rooms", "GET, POST"},
		{"/v1/rooms/01ABC", "GET"},
		{"/v1/rooms/01ABC/messages", "GET, POST"},
		{"/v1/rooms/01ABC:join", "POST"},
		{"/v1/rooms/01ABC:stream", "GET"},
		{"/v1/auth/login", "POST"},
		{"/v1/rooms/:join", "GET"}, // roomId ":join", as the gateway reads it
		{"/v1/nothing", ""},
		{"/v1/rooms/a/b/c", ""},
	} {
		if got := Allow(tt.path); got != tt.want {
			t.Errorf("Allow(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}
