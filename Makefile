# One target per thing a person wants to do. Engines (scripts/engine.sh): ENGINE=debian (Docker 20.10,
# default paths), moby28 (Docker 28), moby29 (Docker 29) or moby29nft (Docker 29, nftables firewall);
# `make test` runs the end-to-end suite on each of them in turn unless ENGINE is set.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

GO ?= go
PLUGIN_NAME ?= ournet/driver:latest
PLUGIN_DIR ?= build/plugin
FUZZTIME ?= 10s
ACTIONLINT_VERSION ?= v1.7.12
# make push: REGISTRY=host:port (required), TAG defaults to the commit (git describe).
REGISTRY ?=
TAG ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo latest)
# Where the docker CLI finds the `docker ournet` command (also ~/.docker/cli-plugins).
CLI_PLUGINS_DIR ?= /usr/local/lib/docker/cli-plugins
ENGINES := $(or $(ENGINE),debian moby28 moby29 moby29nft)
# ENGINE=moby28 or moby29nft: the cluster on Debian's engine (it runs debian and moby29).
CLUSTER_ENGINES := $(if $(ENGINE),$(or $(filter debian moby29,$(ENGINE)),debian),debian moby29)

.PHONY: build plugin cli install push uninstall logs ports demo lint-workflows unit integration e2e test test-cluster bench bench-cluster faults fuzz clean

build:
	$(GO) build ./...

plugin:
	scripts/build-rootfs.sh $(PLUGIN_DIR)

# The `docker ournet` CLI plugin.
cli:
	$(GO) build -o build/docker-ournet ./cmd/docker-ournet

# Starts a test engine only when none answers; never restarts an engine that runs.
# Also builds the small test image the README's examples use (no registry needed).
install: plugin cli
	PLUGIN_NAME=$(PLUGIN_NAME) scripts/plugin.sh install $(PLUGIN_DIR)
	install -D -m 0755 build/docker-ournet $(CLI_PLUGINS_DIR)/docker-ournet
	scripts/test-image.sh

# Publishes the plugin as REGISTRY/ournet/driver:TAG, as a release would; users then run
# docker plugin install --grant-all-permissions REGISTRY/ournet/driver:TAG
ifneq ($(filter push,$(MAKECMDGOALS)),)
ifeq ($(REGISTRY),)
$(error make push: set REGISTRY=host:port, e.g. make push REGISTRY=127.0.0.1:5000 TAG=v1)
endif
endif
push: plugin
	scripts/plugin.sh push $(REGISTRY)/ournet/driver:$(TAG) $(PLUGIN_DIR)

uninstall:
	PLUGIN_NAME=$(PLUGIN_NAME) scripts/plugin.sh uninstall
	rm -f $(CLI_PLUGINS_DIR)/docker-ournet

logs:
	PLUGIN_NAME=$(PLUGIN_NAME) scripts/plugin.sh logs

# Ports ournet publishes (docker port cannot show a remote driver's ports).
ports: cli
	@build/docker-ournet ports --plugin $(PLUGIN_NAME)

demo:
	scripts/demo.sh

# Checks .github/workflows (actionlint, a pinned Go module; it also runs shellcheck when on PATH).
lint-workflows:
	$(GO) run github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

# Netns tests need root and change namespaces: they run in `integration`.
unit:
	$(GO) test -race -skip 'Netns' ./...

integration:
	$(GO) test -race -count=1 -run 'Netns' ./...

e2e:
	ENGINE=$(or $(ENGINE),debian) scripts/e2e.sh

# engine.sh stops the running engine before starting the next one.
test: lint-workflows unit integration
	set -e; for engine in $(ENGINES); do ENGINE=$$engine scripts/e2e.sh; done
	$(MAKE) test-cluster

# The test cluster (scripts/cluster.sh) on each engine it runs: up, its tests, down, host checked.
test-cluster:
	set -e; for engine in $(CLUSTER_ENGINES); do ENGINE=$$engine scripts/cluster-test.sh; done

bench:
	scripts/bench.sh

# An ournet swarm network against Docker's overlay across two nodes of the test cluster (not in make test).
bench-cluster:
	scripts/bench-cluster.sh

# Request streams during plugin kill, disable/enable, dockerd restart, flushes, a deleted bridge.
faults:
	scripts/bench.sh faults

fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

clean:
	rm -rf build
