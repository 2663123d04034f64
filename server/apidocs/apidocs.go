package apidocs

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed parley.swagger.json
var spec []byte

//go:embed static swagger-ui
var files embed.FS

// SpecPath and DocsPath are where Handler serves the spec and the docs page.
const (
	SpecPath = "/openapi.json"
	DocsPath = "/docs/"
)

// Spec returns the embedded OpenAPI document (Swagger 2.0, JSON). The caller
// must not modify it.
func Spec() []byte { return spec }

// asset is one embedded file with its validator and a gzip copy made on
// first use.
type asset struct {
	body  []byte
	ctype string
	etag  string
	once  sync.Once
	gz    []byte
}

func newAsset(name string, body []byte) *asset {
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	sum := sha256.Sum256(body)
	return &asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

func (a *asset) gzipped() []byte {
	a.once.Do(func() {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		_, _ = zw.Write(a.body)
		_ = zw.Close()
		a.gz = b.Bytes()
	})
	return a.gz
}

func (a *asset) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Add("Vary", "Accept-Encoding")
	body, etag := a.body, a.etag
	if len(body) > 1024 && acceptsGzip(r) {
		body, etag = a.gzipped(), a.etag[:len(a.etag)-1]+`-gz"`
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("ETag", etag)
	// ServeContent answers If-None-Match with 304 and HEAD without a body.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

// Handler serves GET/HEAD /openapi.json, /docs (redirect) and /docs/... and
// passes every other request to next (which may be nil: 404).
func Handler(next http.Handler) http.Handler {
	if next == nil {
		next = http.NotFoundHandler()
	}
	assets := map[string]*asset{SpecPath: newAsset(".json", spec)}
	err := fs.WalkDir(files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		// static/index.html -> /docs/index.html; swagger-ui/x -> /docs/swagger-ui/x
		assets[DocsPath+strings.TrimPrefix(name, "static/")] = newAsset(name, body)
		return nil
	})
	if err != nil {
		panic("apidocs: embedded files: " + err.Error()) // cannot happen: embed.FS is read at build time
	}
	assets[DocsPath] = assets[DocsPath+"index.html"]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p != SpecPath && p != "/docs" && !strings.HasPrefix(p, DocsPath) {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if p == "/docs" {
			http.Redirect(w, r, DocsPath, http.StatusMovedPermanently)
			return
		}
		a, ok := assets[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if p == SpecPath {
			// Any origin may read the spec (API tools, editors); it is public.
			w.Header().Set("Access-Control-Allow-Origin", "*")
		}
		a.serve(w, r)
	})
}
