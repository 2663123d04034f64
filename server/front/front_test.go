package front

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc"
)

func TestRESTCORS(t *testing.T) {
	gateway := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := Handler(grpc.NewServer(), Options{AllowedOrigins: []string{"https://chat.example"}, Gateway: gateway, Ready: func() error { return nil }})
	do := func(method, origin string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "http://parley.test/v1/rooms", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if method == http.MethodOptions {
			r.Header.Set("Access-Control-Request-Method", "POST")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do(http.MethodOptions, "https://chat.example"); w.Code != http.StatusNoContent ||
		w.Header().Get("Access-Control-Allow-Origin") != "https://chat.example" || w.Header().Get("Access-Control-Allow-Headers") == "" {
		t.Errorf("allowed preflight: %d %v", w.Code, w.Header())
	}
	if w := do(http.MethodGet, "https://chat.example"); w.Code != http.StatusTeapot || w.Header().Get("Access-Control-Allow-Origin") != "https://chat.example" {
		t.Errorf("allowed GET: %d %v", w.Code, w.Header())
	}
	if w := do(http.MethodOptions, "https://evil.example"); w.Code != http.StatusForbidden {
		t.Errorf("foreign preflight: %d", w.Code)
	}
	if w := do(http.MethodGet, "https://evil.example"); w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("foreign GET got CORS headers: %v", w.Header())
	}
	if w := do(http.MethodGet, ""); w.Code != http.StatusTeapot || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("no origin: %d %v", w.Code, w.Header())
	}
}
