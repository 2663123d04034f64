# Parley. The two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go
BUF   := tools/node_modules/.bin/buf

.PHONY: fuzz web web-e2e bench run test test-clients client-tools build tools generate check-generate lint vet unit services-up services-down services-status clean

## run: Parley in one process on embedded stand-ins (in-process Redis, Kafka, FerretDB on SQLite under ./data), web app included
run: webclient/dist/index.html
	cd devstack/parley-dev && $(GO) run .

## web: build the web app (served by parley server from webclient/dist)
web:
	cd webclient && npm ci --no-audit --no-fund && npm run build
webclient/dist/index.html: $(shell find webclient/src -type f 2>/dev/null) webclient/index.html webclient/package-lock.json $(wildcard gen/ts/parley/v1/*.ts)
	$(MAKE) --no-print-directory web

## web-e2e: web app unit tests, type check, build, end-to-end in headless Chromium on real services
web-e2e:
	bash scripts/web-e2e.sh

## test: install and start the real services, then every check and test (see scripts/test.sh)
test:
	bash scripts/test.sh

## bench: fanout-v1 through Parley, on Redis alone (--raw) and through a server doing only delivery (--floor); tables + JSON in docs/bench/ (ARGS="--rates 1000,2000")
bench:
	bash scripts/bench.sh $(ARGS)

## build: the parley binary in bin/
build:
	$(GO) build -o bin/parley ./cmd/parley

## tools: the pinned code generators (npm devDependencies of tools/, Go tools of tools/go.mod, grpcio-tools in tools/python/.venv)
tools: tools/node_modules/.installed tools/python/.venv/.installed
tools/python/.venv/.installed: tools/python/requirements.txt
	rm -rf tools/python/.venv
	python3 -m venv tools/python/.venv
	tools/python/.venv/bin/pip install -q --disable-pip-version-check -r tools/python/requirements.txt
	touch $@
tools/node_modules/.installed: tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund
	cd tools && $(GO) build -o /dev/null tool
	touch $@

## generate: regenerate gen/ from proto/ (offline once tools are installed)
generate: tools
	$(BUF) lint
	$(BUF) generate
	cp gen/openapi/parley.swagger.json server/apidocs/parley.swagger.json
	cp tools/node_modules/swagger-ui-dist/{swagger-ui-bundle.js,swagger-ui-bundle.js.LICENSE.txt,swagger-ui.css,LICENSE,NOTICE} server/apidocs/swagger-ui/

## check-generate: fail if gen/ or server/apidocs differ from what `make generate` writes
check-generate: generate
	@git diff --exit-code --stat -- gen server/apidocs || { echo "gen/ is stale: run 'make generate' and commit it"; exit 1; }
	@test -z "$$(git status --porcelain -- gen server/apidocs)" || { git status --porcelain -- gen server/apidocs; echo "gen/ has untracked files: run 'make generate' and commit them"; exit 1; }

## client-tools: grpcurl and grpc-health-probe, pinned in tools/clients/go.mod, into bin/
client-tools:
	cd tools/clients && $(GO) build -o ../../bin/ -ldflags "-X main.version=$$($(GO) list -m -f '{{.Version}}' github.com/fullstorydev/grpcurl)" \
		github.com/fullstorydev/grpcurl/cmd/grpcurl github.com/grpc-ecosystem/grpc-health-probe

## test-clients: grpcurl, curl, grpc-health-probe, the examples and schemathesis against one Parley (services must run)
test-clients:
	bash scripts/test-clients.sh

## lint: buf lint, go vet
lint: tools
	$(BUF) lint
	$(GO) vet ./...

## fuzz: every Go fuzz target for FUZZTIME (default 10s) each
fuzz:
	bash scripts/fuzz.sh

## unit: the fast tests only (in-process stand-ins, no services)
unit:
	$(GO) test -race -count=1 ./...

services-up:
	bash scripts/services.sh install
	bash scripts/services.sh start all
services-down:
	bash scripts/services.sh stop all
services-status:
	bash scripts/services.sh status

clean:
	rm -rf bin
