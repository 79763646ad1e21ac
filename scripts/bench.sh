#!/usr/bin/env bash
# make bench: ournet against Docker's built-in bridge on the same engine in the same run.
# Prepares what it needs like the e2e suite (engine, plugin, test image), then prints the IPAM
# allocator benchmarks and one table of engine-level measurements with ratios.
#
#   ENGINE=debian|moby28|moby29|moby29nft scripts/bench.sh [faults|scale|lb]   (ROUNDS=5 pairs per row by default, 21 for scale)
#   With "faults": only the fault-injection table (make faults); it restarts the engine.
#   With "scale": only the growth table (10,000 published ports, 200 containers and networks, 1,000
#   endpoints for memory: about 30 minutes).
#   With "lb": only the target-group table: a group of three members through its published frontend
#   against nginx and HAProxy on the host (Debian's packages, installed here if missing, their own
#   services left stopped) in front of the same members, then the plugin's CPU idle and with 20 groups
#   of 5 members health-checked every second (about 4 minutes).
set -euo pipefail
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
cd "$(dirname "$0")/.."

engine=${ENGINE:-debian}
# Benchmark whatever engine answers; start the chosen one only when none does.
if ! docker info >/dev/null 2>&1; then
	ENGINE=$engine scripts/engine.sh start
fi
# The engine engine.sh started last (moby29 and moby29nft run the same binary: ask engine.sh's state).
if [[ -z ${ENGINE:-} && -s /run/ournet-engine/current ]]; then
	engine=$(</run/ournet-engine/current)
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
	OURNET_ENGINE=$engine go run ./test/bench -scale -rounds "${ROUNDS:-21}"
}
# nginx and HAProxy: the balancers the labs put in front; the bench runs its own instances of them
# on 127.0.0.1 and never the packages' services.
lb_tools() {
	local missing=() before
	command -v nginx >/dev/null || missing+=(nginx)
	command -v haproxy >/dev/null || missing+=(haproxy)
	((${#missing[@]})) || return 0
	before=" $(pgrep -x 'nginx|haproxy' | tr '\n' ' ' || true) "
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
		local pkg # only the services of what this function installed, never a user's own
		for pkg in "${missing[@]}"; do
			systemctl disable --now "$pkg.service" >/dev/null 2>&1 || true
		done
	fi
	# Without systemd an init script may have started them: stop only what the install started with
	# the packages' own configs (nginx's default config is /etc/nginx/nginx.conf when no -c is given).
	local pid cmd
	for pid in $(pgrep -x 'nginx|haproxy'); do
		[[ $before == *" $pid "* ]] && continue
		cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
		if [[ $cmd == "nginx: master process"* && ($cmd != *" -c "* || $cmd == *" -c /etc/nginx/nginx.conf"*) ]] ||
			[[ $cmd == *haproxy*" -f /etc/haproxy/haproxy.cfg"* ]]; then
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
}
lb() {
	echo "== Target groups: ournet vs nginx and HAProxy on the host"
	lb_tools
	OURNET_ENGINE=$engine go run ./test/bench -lb -rounds "${ROUNDS:-5}" -probe "$probe"
}
case ${1:-} in
faults) faults; exit 0 ;;
scale) scale; exit 0 ;;
lb) lb; exit 0 ;;
esac

echo "== IPAM allocator (go test -bench, ns/op on this machine)"
go test -run='^$' -bench=. ./ipam/ | grep -E '^(Benchmark|ok)'
echo
echo "== Engine: ournet vs bridge"
OURNET_ENGINE=$engine go run ./test/bench -rounds "${ROUNDS:-5}"
echo
scale
echo
lb
echo
faults
