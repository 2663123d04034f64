package front

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHandlePprof: the profiling endpoints the server and the persister
// serve with --pprof answer, and nothing else is added to the mux.
func TestHandlePprof(t *testing.T) {
	mux := http.NewServeMux()
	HandlePprof(mux)
	for path, want := range map[string]int{
		"/debug/pprof/":                  http.StatusOK,
		"/debug/pprof/cmdline":           http.StatusOK,
		"/debug/pprof/symbol":            http.StatusOK,
		"/debug/pprof/goroutine?debug=1": http.StatusOK,
		"/metrics":                       http.StatusNotFound,
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("GET %s: %d, want %d", path, rec.Code, want)
		}
	}
}
