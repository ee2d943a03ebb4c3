# capkv build, run and test entry points. `make run` and `make test` are the
# two commands the README promises work on a fresh machine.

GO        ?= go
BIN       := bin
NODES     ?= 3
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
GOBIN_DIR := $(CURDIR)/.tools/bin

# Packages with goroutines and shared state: tested with the race detector,
# with every package under internal/ but internal/e2e: its tests drive
# separate kvd processes (built without -race), so a second run under the
# detector would check only the test harness, for five minutes; it runs
# once, in the second line of test.
RACE_PKGS := ./consistency/... ./shard/... ./client/... ./replication/...

.PHONY: jepsen-docker jepsen-docker-tls demo docker-image docker-up docker-up-tls docker-down docker-smoke docker-smoke-tls all build run test test-short lint vet fmt-check bench fuzz proto clean jepsen jepsen-quick

all: build

# -buildvcs=auto: --version reports the git revision even where GOFLAGS turns
# stamping off (it still stays off outside a git checkout, and in worktrees).
build:
	$(GO) build -buildvcs=auto -o $(BIN)/ ./cmd/...

## run: start a local 3-node cluster on loopback (Ctrl-C stops it; data stays in data/dev)
run: build
	$(BIN)/kvd dev --nodes $(NODES)

## test: formatting, vet, every test (race detector on concurrent packages), and the quick partition tests
test: fmt-check vet
	internal=$$($(GO) list ./internal/... | grep -v '/internal/e2e$$') && \
	  $(GO) test -race -count=1 -timeout 15m $(RACE_PKGS) $$internal
	$(GO) test -count=1 -timeout 15m ./...
	$(MAKE) jepsen-quick

## jepsen-quick: short partition tests (register, set, ap set, register with --tls, register with the membership nemesis), a short CAP demo, and the proof that the checker catches a bug
JEPSEN_OUT ?= out/jepsen
jepsen-quick: build
	@mkdir -p $(JEPSEN_OUT)
	$(BIN)/kvjepsen run --nodes 3 --clients 6 --time 15s --workload register --nemesis partition-halves,isolate-leader,kill,pause --out $(JEPSEN_OUT)/quick-register
	$(BIN)/kvjepsen run --nodes 3 --clients 6 --time 15s --workload set --nemesis partition-halves,kill,pause --out $(JEPSEN_OUT)/quick-set
	$(BIN)/kvjepsen run --backend process --nodes 3 --clients 6 --time 10s --workload register --nemesis partition-halves,pause --out $(JEPSEN_OUT)/quick-process
	$(BIN)/kvjepsen run --backend process --tls --nodes 3 --clients 6 --time 10s --workload register --nemesis partition-halves,kill --out $(JEPSEN_OUT)/quick-tls
	$(BIN)/kvjepsen run --mode ap --level one --nodes 5 --clients 8 --time 15s --workload set --nemesis partition-halves,kill --out $(JEPSEN_OUT)/quick-ap-set
	@echo "== membership: a node joins and an original one is drained and stopped while the register workload runs"
	@$(BIN)/kvjepsen run --nodes 3 --clients 6 --time 15s --heal-for 1s --workload register --nemesis membership \
	  --out $(JEPSEN_OUT)/quick-membership > $(JEPSEN_OUT)/quick-membership.log 2>&1; code=$$?; \
	  cat $(JEPSEN_OUT)/quick-membership.log; \
	  if [ $$code -ne 0 ]; then exit $$code; fi; \
	  grep -q 'healed: join n4' $(JEPSEN_OUT)/quick-membership.log && grep -q 'healed: remove n' $(JEPSEN_OUT)/quick-membership.log \
	    && ! grep -q 'kvjepsen: heal ' $(JEPSEN_OUT)/quick-membership.log \
	    || { echo "FAIL: the membership nemesis did not complete a join and a drain"; exit 1; }
	$(BIN)/kvjepsen demo --before 3s --split 8s --after 4s --out $(JEPSEN_OUT)/quick-demo
	@echo "== proof: with the test-only unsafe read path the checker must report a violation (exit 1)"
	@$(BIN)/kvjepsen run --nodes 3 --clients 6 --time 12s --workload register --nemesis partition-halves \
	  --unsafe-local-reads --out $(JEPSEN_OUT)/quick-unsafe > $(JEPSEN_OUT)/quick-unsafe.log 2>&1; code=$$?; \
	  tail -4 $(JEPSEN_OUT)/quick-unsafe.log; \
	  if [ $$code -ne 1 ]; then echo "FAIL: unsafe reads were not caught (exit $$code)"; exit 1; fi; \
	  echo "ok: the checker caught the unsafe read path"

## demo: the CAP demonstration (cp and ap side by side under one partition)
demo: build
	$(BIN)/kvjepsen demo --out out/demo

## jepsen: the long profile: 5 nodes, every nemesis, both workloads and both modes, 60s each
jepsen: build
	$(BIN)/kvjepsen run --nodes 5 --clients 10 --time 60s --workload register --nemesis all --out $(JEPSEN_OUT)/register
	$(BIN)/kvjepsen run --nodes 5 --clients 10 --time 60s --workload set --nemesis all --out $(JEPSEN_OUT)/set
	$(BIN)/kvjepsen run --mode ap --level one --nodes 5 --clients 10 --time 60s --workload register --nemesis all --out $(JEPSEN_OUT)/ap-register
	$(BIN)/kvjepsen run --mode ap --level one --nodes 5 --clients 10 --time 60s --workload set --nemesis all --out $(JEPSEN_OUT)/ap-set

test-short:
	$(GO) test -short -count=1 ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## bench: micro-benchmarks (ring lookup, storage, end-to-end through the client)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./ring/ ./shard/ ./internal/node/ ./internal/e2e/

## fuzz: run every fuzzer briefly (FUZZTIME each); new corpus entries land in testdata/
FUZZTIME ?= 20s
fuzz:
	@for pkg in ./ring ./shard ./internal/kverrors; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## proto: regenerate api/*.pb.go with pinned generator versions (needs protoc: apt-get install protobuf-compiler)
proto:
	GOBIN=$(GOBIN_DIR) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(GOBIN_DIR) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	cd api && PATH=$(GOBIN_DIR):$$PATH protoc --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative capkv.proto raft.proto

clean:
	rm -rf $(BIN) .tools

## docker-image: a FROM-scratch image around static kvd and kvctl (nothing is pulled)
DOCKER_CTX := $(BIN)/docker
docker-image:
	@mkdir -p $(DOCKER_CTX)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(DOCKER_CTX)/ ./cmd/kvd ./cmd/kvctl
	cp deploy/docker/Dockerfile $(DOCKER_CTX)/Dockerfile
	docker build -q -t capkv:dev $(DOCKER_CTX)

## docker-up / docker-down: the 5-node, two-region cluster of deploy/docker/compose.yaml
## (project "capkv", with `docker compose` or `docker-compose`, whichever is installed)
COMPOSE := deploy/docker/compose.sh
docker-up: docker-image
	$(COMPOSE) up -d
	@echo "try: $(COMPOSE) exec n1 /kvctl --endpoints n1:7001 cluster status"
	@echo " or: $(DOCKER_CTX)/kvctl --endpoints 127.0.0.1:$${CAPKV_HOST_PORT:-7001} cluster status   (n1's published port)"

## docker-up-tls: the same cluster with mutual TLS (deploy/docker/compose.tls.yaml), certificates
## made on first use in bin/docker-tls (CAPKV_TLS_DIR); the client certificate is admin's
docker-up-tls: docker-image
	$(COMPOSE) --tls up -d
	@echo "try: $(COMPOSE) --tls exec n1 /kvctl --endpoints n1:7001 --cacert /certs/ca.crt --cert /certs/admin.crt --key /certs/admin.key cluster status"
	@echo " or: $(DOCKER_CTX)/kvctl --endpoints 127.0.0.1:$${CAPKV_HOST_PORT:-7001} --cacert $(BIN)/docker-tls/ca.crt --cert $(BIN)/docker-tls/admin.crt --key $(BIN)/docker-tls/admin.key cluster status"

# (The TLS file only adds flags and mounts to the same services: down needs no --tls.)
docker-down:
	$(COMPOSE) down -v

## docker-smoke: build the image, start the compose cluster, write and read through it, tear it down
docker-smoke: docker-image
	deploy/docker/smoke.sh

## docker-smoke-tls: the smoke test with mutual TLS; plaintext clients must be refused
docker-smoke-tls: docker-image
	deploy/docker/smoke.sh --tls

## jepsen-docker: a short partition test on containers of the image (kvjepsen --backend docker)
jepsen-docker: docker-image build
	@mkdir -p $(JEPSEN_OUT)
	$(BIN)/kvjepsen run --backend docker --image capkv:dev --nodes 3 --clients 6 --time 12s --workload register \
	  --nemesis partition-halves,kill,pause --out $(JEPSEN_OUT)/docker-register

## jepsen-docker-tls: the same with mutual TLS on every node (kvjepsen --tls)
jepsen-docker-tls: docker-image build
	@mkdir -p $(JEPSEN_OUT)
	$(BIN)/kvjepsen run --backend docker --tls --image capkv:dev --nodes 3 --clients 6 --time 12s --workload register \
	  --nemesis partition-halves,kill,pause --out $(JEPSEN_OUT)/docker-register-tls
