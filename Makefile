# One target per thing a person wants to do. Engines: ENGINE=debian (Docker 20.10) or ENGINE=moby29
# (Docker 29); `make test` runs the end-to-end suite on both unless ENGINE is set.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

GO ?= go
PLUGIN_NAME ?= ournet/driver:latest
PLUGIN_DIR ?= build/plugin
FUZZTIME ?= 10s
# Where the docker CLI finds the `docker ournet` command (also ~/.docker/cli-plugins).
CLI_PLUGINS_DIR ?= /usr/local/lib/docker/cli-plugins
ENGINES := $(or $(ENGINE),debian moby29)

.PHONY: build plugin cli install uninstall logs ports demo unit integration e2e test bench faults fuzz clean

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

# Netns tests need root and change namespaces: they run in `integration`.
unit:
	$(GO) test -race -skip 'Netns' ./...

integration:
	$(GO) test -race -count=1 -run 'Netns' ./...

e2e:
	ENGINE=$(or $(ENGINE),debian) scripts/e2e.sh

# engine.sh stops the running engine before starting the next one.
test: unit integration
	set -e; for engine in $(ENGINES); do ENGINE=$$engine scripts/e2e.sh; done

bench:
	scripts/bench.sh

# Request streams during plugin kill, disable/enable, dockerd restart, flushes, a deleted bridge.
faults:
	scripts/bench.sh faults

fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

clean:
	rm -rf build
