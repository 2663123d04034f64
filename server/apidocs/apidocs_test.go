package apidocs

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSpecMatchesGenerated fails when the embedded copy is older than
// gen/openapi (run `make generate`).
func TestSpecMatchesGenerated(t *testing.T) {
	gen, err := os.ReadFile("../../gen/openapi/parley.swagger.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gen, spec) {
		t.Fatal("server/apidocs/parley.swagger.json differs from gen/openapi/parley.swagger.json: run `make generate`")
	}
}

// TestSwaggerUIMatchesPinned compares the embedded swagger-ui files with the
// pinned npm package when tools/ is installed.
func TestSwaggerUIMatchesPinned(t *testing.T) {
	dist := "../../tools/node_modules/swagger-ui-dist"
	if _, err := os.Stat(dist); err != nil {
		t.Skip("tools/node_modules not installed (make tools)")
	}
	entries, err := files.ReadDir("swagger-ui")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		want, err := os.ReadFile(filepath.Join(dist, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := files.ReadFile("swagger-ui/" + e.Name())
		if !bytes.Equal(got, want) {
			t.Errorf("swagger-ui/%s differs from %s: run `make generate`", e.Name(), dist)
		}
	}
}

func get(t *testing.T, h http.Handler, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandler(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "next") })
	h := Handler(next)

	tests := []struct {
		path, ctype, contains string
		code                  int
	}{
		{"/openapi.json", "application/json", `"swagger": "2.0"`, 200},
		{"/docs/", "text/html; charset=utf-8", "swagger-ui/swagger-ui-bundle.js", 200},
		{"/docs/index.html", "text/html; charset=utf-8", "init.js", 200},
		{"/docs/init.js", "text/javascript; charset=utf-8", "../openapi.json", 200},
		{"/docs/swagger-ui/swagger-ui.css", "text/css; charset=utf-8", ".swagger-ui", 200},
		{"/docs/swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8", "SwaggerUIBundle", 200},
		{"/docs/nope.js", "", "", 404},
		{"/docs", "", "", 301},
		{"/elsewhere", "", "next", 200},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp := get(t, h, tt.path)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.code)
			}
			if tt.ctype != "" && resp.Header.Get("Content-Type") != tt.ctype {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tt.ctype)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body does not contain %q", tt.contains)
			}
		})
	}

	t.Run("spec is JSON", func(t *testing.T) {
		var doc map[string]any
		if err := json.NewDecoder(get(t, h, "/openapi.json").Body).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		if doc["paths"] == nil {
			t.Fatal("no paths")
		}
	})
	t.Run("gzip and etag", func(t *testing.T) {
		resp := get(t, h, "/docs/swagger-ui/swagger-ui-bundle.js", "Accept-Encoding", "gzip, br")
		if resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		plain, _ := io.ReadAll(zr)
		want, _ := files.ReadFile("swagger-ui/swagger-ui-bundle.js")
		if !bytes.Equal(plain, want) {
			t.Fatal("gunzipped body differs")
		}
		etag := resp.Header.Get("ETag")
		again := get(t, h, "/docs/swagger-ui/swagger-ui-bundle.js", "Accept-Encoding", "gzip", "If-None-Match", etag)
		if again.StatusCode != http.StatusNotModified {
			t.Fatalf("conditional GET: %d, want 304", again.StatusCode)
		}
	})
	t.Run("method", func(t *testing.T) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/openapi.json", nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("POST: %d", rec.Code)
		}
	})
}
