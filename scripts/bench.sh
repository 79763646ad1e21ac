#!/usr/bin/env bash
# make bench: ournet against Docker's built-in bridge on the same engine in the same run.
# Prepares what it needs like the e2e suite (engine, plugin, test image), then prints the IPAM
# allocator benchmarks and one table of engine-level measurements with ratios.
#
#   ENGINE=debian|moby29 scripts/bench.sh [faults|scale]   (ROUNDS=5 pairs per row by default)
#   With "faults": only the fault-injection table (make faults); it restarts the engine.
#   With "scale": only the growth table (10,000 published ports, 200 containers and networks, 1,000
#   endpoints for memory: about 15 minutes).
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
scale() {
	echo "== Growth: the cost of a change as more exists"
	OURNET_ENGINE=$engine go run ./test/bench -scale -rounds "${ROUNDS:-5}"
}
case ${1:-} in
faults) faults; exit 0 ;;
scale) scale; exit 0 ;;
esac

echo "== IPAM allocator (go test -bench, ns/op on this machine)"
go test -run='^$' -bench=. ./ipam/ | grep -E '^(Benchmark|ok)'
echo
echo "== Engine: ournet vs bridge"
OURNET_ENGINE=$engine go run ./test/bench -rounds "${ROUNDS:-5}"
echo
scale
echo
faults
