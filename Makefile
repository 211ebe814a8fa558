# OMS front door. `make run` starts the whole stack; `make test` runs every test.
SHELL := /bin/bash
MODULES := proto pkg services/ingest services/processor services/query cmd/omsctl deploy/local deploy/k8s e2e tools/openapi
PKGS := $(addsuffix /...,$(addprefix ./,$(MODULES)))
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/oms?sslmode=disable
export DATABASE_URL

.PHONY: all build build-local images k8s run demo load bench test test-short generate check-generated lint migrate migrate-down postgres clean

all: lint test

## build: compile the three services into ./bin
build:
	@mkdir -p bin
	CGO_ENABLED=0 go build -trimpath -o bin/ ./services/ingest ./services/processor ./services/query

## images: the three service images (and the emulator's), where a Docker engine runs
IMAGE_TAG ?= dev
images:
	@docker info >/dev/null 2>&1 || { echo "images: no Docker engine here; 'make build' makes the same static binaries"; exit 1; }
	for s in ingest processor query sqslocal; do docker build -f deploy/$$s/Dockerfile -t ghcr.io/omsdev/oms-$$s:$(IMAGE_TAG) . || exit 1; done

## k8s: render the Kubernetes overlays (kustomize as a Go library, offline) and check them
k8s:
	go test -count=1 -run 'Render' ./deploy/k8s

## run: the whole stack (PostgreSQL, SQS emulator, migrations, queues, the three services); Ctrl-C stops it
# exec: omsstack is make's own child, with no shell between, so it sees make
# go (or be interrupted on its own, as by `kill -INT <make pid>`) and stops.
run: postgres build-local
	@exec bin/omsstack

## demo: walk a few orders through their lifecycle on the running stack
demo:
	@go run ./deploy/local/cmd/omsstack demo

## load: N orders at concurrency C against the running stack (make load N=5000 C=32)
N ?= 2000
C ?= 16
load:
	go run ./deploy/local/cmd/omsload -n $(N) -c $(C)

## bench: the whole system against raw ceilings measured in the same run, on a stack of its own; writes docs/performance.md (a few minutes; BENCH_FLAGS="-cpuprofile prof" and more: go run ./deploy/local/cmd/omsbench -h)
bench: postgres build-local
	go run ./deploy/local/cmd/omsbench -bin bin -out docs/performance.md -notes docs/performance-notes.md $(BENCH_FLAGS)

## build-local: the services plus the local tools (emulator, stack runner, load generator) and the omsctl client
build-local:
	@mkdir -p bin
	go build -o bin/ ./services/ingest ./services/processor ./services/query ./deploy/local/cmd/sqslocal ./deploy/local/cmd/omsstack ./deploy/local/cmd/omsload ./cmd/omsctl

## test: every test of every module, with the race detector, against the real PostgreSQL
test: postgres
	go test -race -count=1 -timeout 20m $(PKGS)

## chaos: the full chaos suite against the real processes (kill -9, SIGTERM, PostgreSQL stopped, SQS restarted, a 20,000-create backlog), with exact accounting; see docs/reliability.md
.PHONY: chaos
chaos: postgres
	OMS_CHAOS=full go test -race -count=1 -timeout 60m -run TestChaos -v ./e2e/

## test-short: the pure unit tests only (no database, no queue)
test-short:
	go test -short -count=1 $(PKGS)

## generate: regenerate proto/oms/v1 (buf + protoc plugins pinned in tools/, googleapis from npm)
generate:
	scripts/generate.sh

## check-generated: fail if the committed generated code is not what generate produces
check-generated: generate
	@git diff --exit-code -- proto/ || { echo "generated code is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard -- proto/)" || { git ls-files --others --exclude-standard -- proto/; echo "untracked generated files: run 'make generate' and commit"; exit 1; }

## lint: gofmt, go vet, buf lint (building buf and staging the googleapis protos as scripts/generate.sh does, when missing)
lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet $(PKGS)
	@test -x .bin/buf || { echo "lint: building buf"; cd tools/buf && GOWORK=off go build -o ../../.bin/ github.com/bufbuild/buf/cmd/buf; }
	@test -d proto/.third_party/google/api || { echo "lint: staging the googleapis protos"; \
		cd tools/protodeps && { [ -d node_modules/google-proto-files ] || npm ci --silent --no-audit --no-fund; } && \
		mkdir -p ../../proto/.third_party/google/api && \
		for f in annotations http field_behavior resource client launch_stage; do \
			cp node_modules/google-proto-files/google/api/$$f.proto ../../proto/.third_party/google/api/ || exit 1; done; }
	cd proto && ../.bin/buf lint --path oms

## postgres: make sure PostgreSQL answers (starts the machine's cluster if needed)
postgres:
	@scripts/postgres.sh

## migrate / migrate-down: apply or roll back the schema on DATABASE_URL
migrate: postgres
	go run ./services/processor migrate up
migrate-down:
	go run ./services/processor migrate down

clean:
	rm -rf bin .bin proto/.third_party
