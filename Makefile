# Parley. The two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go
BUF   := tools/node_modules/.bin/buf

.PHONY: bench run test build tools generate check-generate lint vet unit services-up services-down services-status clean

## run: Parley in one process on embedded stand-ins (in-process Redis, Kafka, FerretDB on SQLite under ./data)
run:
	cd devstack/parley-dev && $(GO) run .

## test: install and start the real services, then every check and test (see scripts/test.sh)
test:
	bash scripts/test.sh

## bench: fanout-v1 through Parley and on Redis alone; tables + JSON in docs/bench/ (ARGS="--rates 1000,2000")
bench:
	bash scripts/bench.sh $(ARGS)

## build: the parley binary in bin/
build:
	$(GO) build -o bin/parley ./cmd/parley

## tools: the pinned code generators (npm devDependencies of tools/, Go tools of tools/go.mod)
tools: tools/node_modules/.installed
tools/node_modules/.installed: tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund
	cd tools && $(GO) build -o /dev/null tool
	touch $@

## generate: regenerate gen/ from proto/ (offline once tools are installed)
generate: tools
	$(BUF) lint
	$(BUF) generate

## check-generate: fail if gen/ differs from what `make generate` writes
check-generate: generate
	@git diff --exit-code --stat -- gen || { echo "gen/ is stale: run 'make generate' and commit it"; exit 1; }
	@test -z "$$(git status --porcelain -- gen)" || { git status --porcelain -- gen; echo "gen/ has untracked files: run 'make generate' and commit them"; exit 1; }

## lint: buf lint, go vet
lint: tools
	$(BUF) lint
	$(GO) vet ./...

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
