// Package apidocs serves Parley's REST API description: the OpenAPI (Swagger
// 2.0) spec that protoc-gen-openapiv2 generates into
// gen/openapi/parley.swagger.json, at /openapi.json, and a browsable API page
// at /docs/ built on swagger-ui-dist (served from this binary, no CDN).
//
// The spec and the swagger-ui files are embedded copies: `make generate`
// refreshes parley.swagger.json from gen/openapi and swagger-ui/ from
// tools/node_modules/swagger-ui-dist (the version pinned in
// tools/package.json), so `make check-generate` catches a stale copy, and
// TestSpecMatchesGenerated catches one in `go test`. static/ holds the page
// itself (index.html, init.js), written by hand.
//
// The handler is stateless and safe for concurrent use.
package apidocs
