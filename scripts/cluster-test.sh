#!/usr/bin/env bash
# make test-cluster: brings the test cluster up on one engine (ENGINE=debian|moby29, scripts/cluster.sh),
# runs its tests (test/cluster, build tag cluster), takes it down and checks that the host is as before:
# no cluster namespaces, mounts, directories, logs or engine processes (dockerd, containerd, shims), and
# the host's own links unchanged.
set -euo pipefail

export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
cd "$(dirname "$0")/.."
engine=${ENGINE:-debian}

host_links() { ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort; }

if [[ -e /run/ournet-cluster/engine ]]; then
	echo "cluster-test.sh: a cluster is up from an earlier run; taking it down first" >&2
	scripts/cluster.sh down
fi
links_before=$(host_links)

trap 'scripts/cluster.sh down || true' EXIT
echo "cluster-test.sh: === cluster on $engine"
ENGINE=$engine scripts/cluster.sh up
status=0
go test -count=1 -v -timeout 15m -tags cluster ./test/cluster/... || status=$?
trap - EXIT
scripts/cluster.sh down

left=()
[[ -z $(ip netns list | grep -E '^ocl-' || true) ]] || left+=("network namespaces: $(ip netns list | grep -E '^ocl-' | tr '\n' ' ')")
! grep -qE 'ournet-cluster|/run/ocl[0-9]' /proc/self/mountinfo || left+=("mounts: $(grep -cE 'ournet-cluster|/run/ocl[0-9]' /proc/self/mountinfo)")
[[ ! -e /run/ournet-cluster && ! -e /var/lib/ournet-cluster ]] || left+=("directories under /run/ournet-cluster or /var/lib/ournet-cluster")
! compgen -G '/run/ocl[0-9]*' >/dev/null || left+=("exec roots: $(echo /run/ocl[0-9]*)")
! compgen -G '/var/log/ournet-cluster-*' >/dev/null || left+=("logs: $(echo /var/log/ournet-cluster-*)")
! pgrep -f 'ournet-cluster/node|/run/ocl[0-9]' >/dev/null || left+=("processes: $(pgrep -af 'ournet-cluster/node|/run/ocl[0-9]' | head -5)")
[[ $(host_links) == "$links_before" ]] || left+=("host links changed: $(diff <(echo "$links_before") <(host_links) | grep '^[<>]' | tr '\n' ' ')")
if ((${#left[@]})); then
	printf 'cluster-test.sh: left on the host: %s\n' "${left[@]}" >&2
	exit 1
fi
echo "cluster-test.sh: host clean after the cluster on $engine"
exit "$status"
