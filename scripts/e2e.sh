#!/usr/bin/env bash
# End-to-end suite on one engine: starts the engine (ENGINE=debian|moby28|moby29|moby29nft), builds and installs the
# plugin, builds the test image and docker-compose (scripts/compose.sh, cached), then runs test/e2e
# (build tag e2e) against the default socket.
# The tests read OURNET_ENGINE and restart the engine with `scripts/engine.sh restart`.
# Afterwards it uninstalls the plugin and stops the engine, unless E2E_KEEP=1.
set -euo pipefail

export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
cd "$(dirname "$0")/.."

engine=${ENGINE:-debian}
export OURNET_ENGINE=$engine

if [[ ! -d test/e2e ]] || ! compgen -G 'test/e2e/*_test.go' >/dev/null; then
	echo "e2e.sh: no e2e tests found in test/e2e" >&2
	exit 1
fi

echo "e2e.sh: === engine $engine"
ENGINE=$engine scripts/engine.sh start
scripts/build-rootfs.sh build/plugin
# The state directory is shared by all test engines: start from an empty state when this engine
# has no ournet network, so nothing of the other engine's networks is reconciled here.
fresh=0
if [[ -z $(docker network ls -q --filter driver=ournet) && -z $(docker network ls -q --filter driver=ournet/driver:latest) ]]; then
	fresh=1
fi
OURNET_FRESH_STATE=$fresh scripts/plugin.sh install build/plugin
scripts/test-image.sh
# Compose v2 for TestLBCompose: built once (minutes) here rather than inside a test's time bound.
scripts/compose.sh >/dev/null

status=0
go test -count=1 -v -timeout 40m -tags e2e ./test/e2e/... || status=$?
# make demo must keep working too: it is the README's lab, run end to end.
if ((status == 0)); then
	echo "e2e.sh: make demo on $engine"
	DEMO_SKIP_SETUP=1 scripts/demo.sh >/tmp/ournet-demo-$engine.log 2>&1 || {
		status=$?
		echo "e2e.sh: make demo failed on $engine:" >&2
		tail -n 30 /tmp/ournet-demo-$engine.log >&2
	}
fi

# Leave the host as we found it: no plugin, no OURNET-* chains, no engine. E2E_KEEP=1 keeps all of
# it for inspection. Uninstall refuses while networks use ournet, so a test that leaked one fails here.
if [[ ${E2E_KEEP:-0} != 1 ]]; then
	if ! scripts/plugin.sh uninstall; then
		echo "e2e.sh: the suite left ournet networks behind on $engine" >&2
		status=1
	fi
	ENGINE=$engine scripts/engine.sh stop
	# A SIGKILLed engine (the fault tests kill it) leaves its containers' namespace files in its exec
	# root; engine.sh stop removes them, and none may be left.
	netns_dir="$(ENGINE=$engine scripts/engine.sh root)/netns"
	if compgen -G "$netns_dir/*" >/dev/null; then
		echo "e2e.sh: $(find "$netns_dir" -mindepth 1 | wc -l) files left in $netns_dir after the engine stopped" >&2
		status=1
	fi
fi
if ((status != 0)); then
	echo "e2e.sh: FAILED on $engine; plugin log: make logs, engine log: scripts/engine.sh logs" >&2
fi
exit "$status"
