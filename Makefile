# cosmount build, test and demo entry points. Every target works on a fresh
# Debian machine with Go; `make test` is exactly what CI runs.

GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/cosmount/cosmount/pkg/version.Version=$(VERSION)
CMDS      := cosmount cosmount-csi cosmount-emulator
# The whole suite mounts real FUSE filesystems and moves GiBs through the
# emulator; on 2 cores it needs minutes, not seconds.
TEST_TIMEOUT ?= 30m

.PHONY: all build test test-go test-deps lint fmt clean e2e-cluster dashboard-image

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# test is what CI runs: every Go test of the module, every fuzz target for
# FUZZTIME, then the real-cluster suite (its first run builds Kubernetes,
# about 20 minutes; later runs reuse the cache and take about 2). test-go is
# the module's tests alone.
test: test-go fuzz e2e-cluster

test-go: test-deps
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -p 2 ./...

# The tests mount for real (fusermount3 from fuse3) and check interoperability
# with s3fs; install them from Debian when they are missing.
# fuzz runs every `func Fuzz...` of the module (found anew each run, see
# test/fuzz/run.sh) for FUZZTIME each; FUZZTIME=10m make fuzz for a long run.
FUZZTIME ?= 10s
.PHONY: fuzz
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) test/fuzz/run.sh

test-deps:
	@command -v fusermount3 >/dev/null && command -v s3fs >/dev/null || { \
	  echo "installing Debian's fuse3 and s3fs"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse3 s3fs >/dev/null; }

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)

# Deployment: the Helm chart in deploy/helm/cosmount is the source of truth; `make manifests` renders it
# with its default values into deploy/kubernetes (test/manifests fails when they differ). `make image`
# needs a Docker engine.
.PHONY: manifests image

manifests:
	$(GO) run ./test/manifests/cmd/render -chart deploy/helm/cosmount -out deploy/kubernetes

image:
	docker build --build-arg VERSION=$(VERSION) -t cosmount:$(VERSION) .

# soak: the long soak (about 17 minutes): several writers through a real
# mount with 10% of COS requests failing, tokens living 5 s and an IAM outage
# of 15 s; ends with a summary line and bytes lost = 0 (see test/soak). The
# short profile runs inside test-go. Needs root and fuse3.
.PHONY: soak
soak: test-deps
	$(GO) test -count=1 -timeout 60m -v -run 'TestSoak$$' ./test/soak -args -soak.profile=long

# bench: cosmount vs the aws-sdk-go-v2 ceiling, s3fs and rclone against one
# emulator process (needs root). BENCH_FLAGS=--quick for a short run; see
# `go run ./test/bench -h`. Results: _output/bench/results.{md,json}.
BENCH_FLAGS ?=
.PHONY: bench
bench: build
	$(GO) run ./test/bench --bin $(BIN) --out _output/bench $(BENCH_FLAGS)

# demo: the seed's story on this machine, each step printed: the emulator's
# IAM + COS, a pod's minted token, the node plugin published to like kubelet
# does, `echo "hello world"` into the mount, the object read back, a refused
# pod, and everything cleaned up (also on failure or Ctrl-C). Needs root;
# installs fuse3 if fusermount3 is missing. See test/demo/main.go.
.PHONY: demo
demo: build
	@command -v fusermount3 >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y fuse3; }
	$(GO) run ./test/demo --bin $(BIN)

# A real Kubernetes node (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd, kubelet) on 127.0.0.1 with the plugin deployed
# from deploy/kubernetes; see test/cluster/README.md. Needs root.
e2e-cluster:
	test/cluster/run.sh

# docs/images/dashboard.png: the Grafana dashboard in deploy/grafana drawn with the data of a real run (two
# volumes under the node's mounter against the emulator, about 5 minutes, queried with Prometheus' engine;
# test/dashboard, its own module). Needs root, FUSE and Chromium (installed from Debian when missing).
dashboard-image:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }
	@mkdir -p docs/images
	cd test/dashboard && $(GO) test -count=1 -timeout 20m -run TestRenderDashboard -v . -args -dashboard.out $(CURDIR)/docs/images/dashboard.png
