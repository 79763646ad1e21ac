#!/usr/bin/env bash
# make bench-cluster: an ournet swarm network against Docker's overlay between two nodes of the test
# cluster (scripts/cluster.sh), in the same run: TCP throughput and ping RTT, plus ournet between two
# containers on one node. Brings a cluster up (ENGINE=debian|moby29) and takes it down after.
#
#   ENGINE=debian|moby29 ROUNDS=15 N=2 scripts/bench-cluster.sh
set -euo pipefail
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
cd "$(dirname "$0")/.."
engine=${ENGINE:-debian}
if [[ -e /run/ournet-cluster/engine ]]; then
	echo "bench-cluster.sh: a cluster is up; taking it down first" >&2
	scripts/cluster.sh down
fi
trap 'scripts/cluster.sh down' EXIT
# Two nodes: a third engine would only add background load to a 2-core machine.
N=${N:-2} ENGINE=$engine scripts/cluster.sh up
OURNET_ENGINE=$engine go run ./test/bench -cluster -rounds "${ROUNDS:-15}"
