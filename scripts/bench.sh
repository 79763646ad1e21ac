#!/usr/bin/env bash
# make bench: ournet against Docker's built-in bridge on the same engine in the same run.
# Prepares what it needs like the e2e suite (engine, plugin, test image), then prints the IPAM
# allocator benchmarks and one table of engine-level measurements with ratios.
#
#   ENGINE=debian|moby29 scripts/bench.sh [faults]   (ROUNDS=5 pairs per row by default)
#   With "faults": only the fault-injection table (make faults); it restarts the engine.
set -euo pipefail
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
cd "$(dirname "$0")/.."

engine=${ENGINE:-debian}
# Benchmark whatever engine answers; start the chosen one only when none does.
if ! docker info >/dev/null 2>&1; then
	ENGINE=$engine scripts/engine.sh start
fi
if [[ -z ${ENGINE:-} ]] && pgrep -f /var/cache/ournet/moby29/bin/dockerd >/dev/null; then
	engine=moby29
fi
scripts/build-rootfs.sh build/plugin >/dev/null
scripts/plugin.sh install build/plugin >/dev/null
scripts/test-image.sh >/dev/null

probe=$(mktemp -d /tmp/ournet-bench-probe.XXXXXX)/probe
trap 'rm -rf "$(dirname "$probe")"' EXIT
go build -o "$probe" ./test/image/probe
faults() {
	echo "== Faults under load"
	OURNET_ENGINE=$engine go run ./test/bench -faults -probe "$probe" -repo "$PWD"
}
if [[ ${1:-} == faults ]]; then
	faults
	exit 0
fi

echo "== IPAM allocator (go test -bench, ns/op on this machine)"
go test -run='^$' -bench=. ./ipam/ | grep -E '^(Benchmark|ok)'
echo
echo "== Engine: ournet vs bridge"
OURNET_ENGINE=$engine go run ./test/bench -rounds "${ROUNDS:-5}"
echo
faults
