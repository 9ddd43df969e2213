# Patronus. `make` alone lists the targets; each target's `## ` comment is its
# line in that list.

.DEFAULT_GOAL := help

# Flags for patronusd under `make run`, e.g. make run ARGS=--insecure
ARGS ?=
# How long each Fuzz target runs under `make fuzz`.
FUZZTIME ?= 10s
# How long each benchmark runs under `make bench`.
BENCHTIME ?= 2s
# Extra `go test` flags for `make test`, e.g. GOTEST_FLAGS='-run TestSet -v'.
GOTEST_FLAGS ?=
export FUZZTIME GOTEST_FLAGS

.PHONY: help run build telegraf test gen verify-gen lint bench fuzz tidy-check clusterbench gnmibench lab-up lab-down

help: ## list the targets
	@echo 'Usage: make <target> [VAR=value]'
	@echo
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-12s %s\n", $$1, $$2 }' $(firstword $(MAKEFILE_LIST))
	@echo
	@echo 'Variables: ARGS (run), GOTEST_FLAGS (test), FUZZTIME=$(FUZZTIME) (fuzz), BENCHTIME=$(BENCHTIME) (bench)'

run: build ## run patronusd on its defaults (TLS, gNMI on 127.0.0.1:9339, data in ./patronus-data); flags via ARGS=
	./bin/patronusd $(ARGS)

build: ## build bin/patronusd
	go build -o bin/patronusd ./cmd/patronusd

telegraf: ## build bin/telegraf: Telegraf with the plugins deploy/telegraf/telegraf.conf uses (tools/telegraf)
	tools/telegraf/build.sh bin/telegraf

test: ## run the tests: Debian packages (installed when root), yanglint, go test ./...
	scripts/test.sh

# The recipes for gen and verify-gen are in Makefile.gen.mk.
include Makefile.gen.mk
gen: ## regenerate gen/model from yang/ and the eBPF objects from dataplane/*/bpf/*.c
verify-gen: ## fail if gen/model or the eBPF objects differ from what `make gen` would write

lint: ## gofmt, go vet and staticcheck (gen/ is skipped)
	scripts/lint.sh

bench: ## run the gnmi-server benchmarks for BENCHTIME each
	go test -run '^$$' -bench . -benchtime $(BENCHTIME) ./gnmi-server/...

fuzz: ## run every Fuzz target for FUZZTIME each
	scripts/fuzz.sh

tidy-check: ## fail if `go mod tidy` would change go.mod or go.sum
	go mod tidy -diff

clusterbench: build ## compare a 3-node patronusd cluster with a 3-member etcd cluster (etcd-server, installed when root); flags via ARGS=
	scripts/deps.sh etcd-server:etcd
	cd tools/clusterbench && go run . -patronusd ../../bin/patronusd -out ../../bin/clusterbench.json $(ARGS)

gnmibench: ## compare Patronus's gNMI server with the reference gNMI Subscribe server (openconfig/gnmi cache), in process; flags via ARGS=
	go run ./tools/gnmibench -out bin/gnmibench.json $(ARGS)

lab-up: ## build the lab (network namespaces patronus-*) and start a 3-site patronusd cluster in it (root); flags via ARGS=
	go run ./tools/lab up $(ARGS)

lab-down: ## stop the lab's daemons, delete its namespaces and /tmp/patronus-lab (root)
	go run ./tools/lab down
