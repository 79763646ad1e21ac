#!/usr/bin/env bash
# A test cluster on this one machine: N simulated Docker hosts joined as one swarm, all managers.
#
#   scripts/cluster.sh up                 N nodes (N=3 by default), plugin and test image on each, swarm
#   scripts/cluster.sh add                one more node (the next free number), provisioned, joined as a
#                                         manager: a host joining a running cluster
#   scripts/cluster.sh docker NODE ARGS…  the docker CLI against NODE (node1, node2, …)
#   scripts/cluster.sh exec NODE CMD…     CMD in NODE's network and mount namespaces (e.g. ip -d link)
#   scripts/cluster.sh stop NODE          the host goes down: its underlay link down, every process of
#                                         the node (engine, containerd, plugin, containers) SIGKILLed
#   scripts/cluster.sh start NODE         the host comes back: link up, engine started again
#   scripts/cluster.sh partition NODE     cut NODE's underlay link (everything keeps running)
#   scripts/cluster.sh heal NODE          restore it
#   scripts/cluster.sh status             nodes, engines, swarm
#   scripts/cluster.sh down               everything removed, the host as before
#
#   ENGINE=debian (default) or moby29: the engine every node runs (scripts/engine.sh installs or builds
#   it). N=4 for a fourth node. Run as root.
#
# Layout. The underlay is the network namespace ocl-ul with the bridge ul0 (10.99.0.254/24), which is
# also the nodes' default gateway and the "outside" a test may send traffic to. Node I is the network
# namespace ocl-nodeI, its eth0 10.99.0.I/24 on ul0. Its dockerd runs in that network namespace, in a
# UTS namespace with the host name nodeI and in a mount namespace of its own, entered with nsenter (never `ip netns exec`, which remounts /sys and
# loses the cgroups), where these host paths are the node's own directories:
#   /run/docker       managed plugins' sockets (/run/docker/plugins, hard-coded in the engine)
#   /var/lib/ournet   ournet's state
#   /run/containerd   so that dockerd starts a containerd of its own, in the node's namespaces,
#                     instead of adopting the host's socket
#   /etc/docker       Docker 20.10 keeps its engine identity (key.json) there
#   /run/xtables.lock the node's iptables lock (iptables are per network namespace)
# The engine's data root is /var/lib/ournet-cluster/nodeI, its exec root /run/oclI, its socket
# /run/ournet-cluster/nodeI/docker.sock and its log /var/log/ournet-cluster-nodeI.log.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# engine.sh's functions: host packages, engine builds, daemon.json and the runc wrapper.
# shellcheck source=scripts/engine.sh
source "$repo/scripts/engine.sh"

readonly ROOT=/run/ournet-cluster      # per-node mount-namespace handles, sockets, pid files
readonly DATA=/var/lib/ournet-cluster  # per-node data roots and private directories
readonly UL=ocl-ul UL_BRIDGE=ul0 UL_NET=10.99.0 UL_GW=10.99.0.254
readonly CLUSTER_ENGINE=${ENGINE:-debian}
readonly NODES=${N:-3}
readonly PRIVATE_DIRS=(/run/docker /var/lib/ournet /run/containerd /etc/docker)
readonly PRIVATE_FILES=(/run/xtables.lock)
readonly PLUGIN=ournet/driver:latest

clog() { echo "cluster.sh: $*" >&2; }
cdie() { clog "error: $*"; exit 1; }

node_index() {
	[[ $1 =~ ^node([1-9][0-9]?)$ ]] || cdie "no node named '$1' (node1, node2, …)"
	echo "${BASH_REMATCH[1]}"
}
# The index of NODE, which must exist.
existing_node() {
	local i
	i=$(node_index "$1") || exit 1
	[[ -d $(node_dir "$i") ]] || cdie "node$i does not exist"
	echo "$i"
}
node_ns() { echo "ocl-node$1"; }
node_dir() { echo "$ROOT/node$1"; }
node_data() { echo "$DATA/node$1"; }
node_socket() { echo "$ROOT/node$1/docker.sock"; }
node_log() { echo "/var/log/ournet-cluster-node$1.log"; }
node_exec_root() { echo "/run/ocl$1"; }
node_addr() { echo "$UL_NET.$1"; }

# The nodes that exist, in order: by their directories and, for down, by their namespaces.
nodes() {
	{
		local d
		for d in "$ROOT"/node*/; do
			[[ -d $d ]] || continue
			d=${d%/}
			echo "${d##*/node}"
		done
		ip netns list | sed -n 's/^ocl-node\([0-9]*\).*/\1/p'
	} | sort -nu
}

engine_of_cluster() { cat "$ROOT/engine" 2>/dev/null || echo "$CLUSTER_ENGINE"; }

# Runs a command in node I's network, mount and UTS namespaces, with its docker CLI pointed at the node.
in_node() {
	local i=$1
	shift
	nsenter --net="/run/netns/$(node_ns "$i")" --mount="$(node_dir "$i")/mnt" --uts="$(node_dir "$i")/uts" -- \
		env DOCKER_HOST="unix://$(node_socket "$i")" "$@"
}

node_docker() {
	local i=$1
	shift
	DOCKER_HOST="unix://$(node_socket "$i")" docker "$@"
}

engine_answers_on() { node_docker "$1" info >/dev/null 2>&1; }

# The underlay: one namespace, one bridge, the nodes' gateway.
make_underlay() {
	ip netns add "$UL"
	ip -n "$UL" link set lo up
	ip -n "$UL" link add "$UL_BRIDGE" type bridge
	ip -n "$UL" addr add "$UL_GW/24" dev "$UL_BRIDGE"
	ip -n "$UL" link set "$UL_BRIDGE" up
}

# Node I's namespaces and private directories (nothing running yet).
make_node() {
	local i=$1 ns dir data
	ns=$(node_ns "$i") dir=$(node_dir "$i") data=$(node_data "$i")
	# The node's directories first: down finds a node by them, also one that up left half made.
	mkdir -p "$dir" "$data"/{docker,ournet,etc-docker} "$dir"/{run-docker/plugins,containerd}
	ip netns add "$ns"
	ip -n "$UL" link add "ul-node$i" type veth peer name eth0 netns "$ns"
	ip -n "$UL" link set "ul-node$i" master "$UL_BRIDGE" up
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add default via "$UL_GW"

	touch "$dir/xtables.lock" "$dir/mnt" "$dir/uts"
	# Its own host name, which swarm shows in docker node ls.
	unshare --uts="$dir/uts" hostname "node$i"
	# A persistent mount namespace: slave, so the host's later mounts still show in it and the node's
	# (container root filesystems, network namespace handles) never show on the host.
	unshare --mount="$dir/mnt" --propagation slave true
	# In it, $ROOT is the plain directory again (same files): its copies of the other nodes' namespace
	# handles go, so no node's namespaces keep another's alive.
	nsenter --mount="$dir/mnt" -- sh -euc '
		umount -l "$3"
		mount --bind "$1/run-docker" /run/docker
		mount --bind "$2/ournet" /var/lib/ournet
		mount --bind "$1/containerd" /run/containerd
		mount --bind "$2/etc-docker" /etc/docker
		mount --bind "$1/xtables.lock" /run/xtables.lock
	' sh "$dir" "$data" "$ROOT"
}

start_engine() {
	local i=$1 engine dockerd logf
	engine=$(engine_of_cluster)
	dockerd=$(dockerd_binary "$engine")
	logf=$(node_log "$i")
	ip -n "$UL" link set "ul-node$i" up
	if engine_answers_on "$i"; then
		return 0
	fi
	mkdir -p "$(node_exec_root "$i")"
	# A killed node's containerd may linger as a zombie (PID 1 here does not reap), which dockerd
	# would take for a running containerd and wait on its socket: forget its pid file.
	local pidf cpid
	pidf=$(node_exec_root "$i")/containerd/containerd.pid
	if [[ -f $pidf ]]; then
		cpid=$(<"$pidf")
		[[ $(ps -o stat= -p "$cpid" 2>/dev/null) == R* || $(ps -o stat= -p "$cpid" 2>/dev/null) == S* ]] || rm -f "$pidf"
	fi
	echo "=== $(date -Is) cluster.sh start node$i ($engine)" >>"$logf"
	# The built engines find their own docker-proxy first (as engine.sh starts them).
	in_node "$i" env PATH="$(dirname "$dockerd"):$PATH" setsid nohup "$dockerd" \
		--host "unix://$(node_socket "$i")" \
		--data-root "$(node_data "$i")/docker" \
		--exec-root "$(node_exec_root "$i")" \
		--pidfile "$(node_dir "$i")/docker.pid" \
		--config-file "$(config_file "$engine")" \
		</dev/null >>"$logf" 2>&1 &
	await_engine "node$i, $engine" $! "$logf" engine_answers_on "$i"
}

# Every process of node I: those in its network namespace (dockerd, containerd, the shims, the
# plugin) and all their descendants (the containers, in namespaces of their own).
node_pids() {
	local ns roots
	ns=$(node_ns "$1")
	[[ -e /run/netns/$ns ]] || return 0
	roots=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
	[[ -n $roots ]] || return 0
	ps -e -o pid=,ppid= | awk -v roots="$roots" '
		BEGIN { n = split(roots, r, " "); for (k = 1; k <= n; k++) keep[r[k]] = 1 }
		{ parent[$1] = $2 }
		END {
			do {
				grew = 0
				for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 }
			} while (grew)
			for (p in keep) print p
		}'
}

kill_node() {
	local i=$1 pids deadline
	deadline=$((SECONDS + 20))
	while pids=$(node_pids "$i") && [[ -n $pids ]]; do
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		if ((SECONDS > deadline)); then
			cdie "node$i: processes still alive after SIGKILL: $(echo $pids)"
		fi
		sleep 0.2
	done
	rm -f "$(node_socket "$i")" "$(node_dir "$i")/docker.pid"
}

# Container and plugin cgroups a killed engine could not remove (cgroup v1 and v2, cgroupfs driver).
remove_node_cgroups() {
	local data=$1 id dir
	for id in $(ls "$data/docker/containers" "$data/docker/plugins" 2>/dev/null | grep -E '^[0-9a-f]{64}$' || true); do
		while read -r dir; do
			rmdir "$dir" 2>/dev/null || true
		done < <(find /sys/fs/cgroup -depth -type d -name "*$id*" 2>/dev/null)
	done
}

manager_token() { node_docker 1 swarm join-token -q manager; }

form_swarm() {
	local i token
	node_docker 1 swarm init --advertise-addr "$(node_addr 1)" --listen-addr "$(node_addr 1):2377" >/dev/null
	# The routing mesh needs IPVS, which this kernel lacks: no ingress network, so no node tries to
	# build its sandbox. Services publish with --publish mode=host.
	echo y | node_docker 1 network rm ingress >/dev/null
	token=$(manager_token)
	for i in $(nodes); do
		((i == 1)) && continue
		join_swarm "$i" "$token"
	done
}

join_swarm() {
	local i=$1 token=$2
	node_docker "$i" swarm join --token "$token" --advertise-addr "$(node_addr "$i")" \
		--listen-addr "$(node_addr "$i"):2377" "$(node_addr 1):2377" >/dev/null
}

# The plugin from this checkout and the test image, on node I. The plugin is created directly, not
# with plugin.sh, which tidies up after older installs on the host and may start a host engine.
provision() {
	local i=$1
	node_docker "$i" plugin create "$PLUGIN" "$repo/build/plugin" >/dev/null
	node_docker "$i" plugin enable "$PLUGIN" >/dev/null
	in_node "$i" "$repo/scripts/test-image.sh" >/dev/null
}

record_host_paths() {
	# Mount points this script creates on the host: down removes the directories again if empty
	# (a created /run/xtables.lock stays, the host's iptables may use it by then).
	local p
	: >"$ROOT/created"
	for p in "${PRIVATE_DIRS[@]}"; do
		if [[ ! -e $p ]]; then mkdir -p "$p" && echo "$p" >>"$ROOT/created"; fi
	done
	for p in "${PRIVATE_FILES[@]}"; do
		if [[ ! -e $p ]]; then touch "$p" && echo "$p" >>"$ROOT/created"; fi
	done
}

cmd_up() {
	[[ ! -e $ROOT/engine ]] || cdie "a cluster is up ($(engine_of_cluster), nodes: $(nodes | sed 's/^/node/' | tr '\n' ' ')); run down first"
	[[ $NODES =~ ^[1-9]$ ]] || cdie "N=$NODES: 1 to 9 nodes"
	check_engine_name "$CLUSTER_ENGINE"
	case "$CLUSTER_ENGINE" in
	debian | moby29) ;;
	*) cdie "ENGINE=$CLUSTER_ENGINE: the cluster runs debian or moby29" ;;
	esac
	ensure_host_packages
	[[ $CLUSTER_ENGINE == moby29 ]] && ensure_moby29
	write_config "$CLUSTER_ENGINE"
	"$repo/scripts/build-rootfs.sh" "$repo/build/plugin" >/dev/null

	local start=$SECONDS i
	mkdir -p "$ROOT" "$DATA"
	# Mount-namespace handles must live on a private mount (one, also after a failed up).
	mountpoint -q "$ROOT" || mount --bind "$ROOT" "$ROOT"
	mount --make-private "$ROOT"
	echo "$CLUSTER_ENGINE" >"$ROOT/engine"
	record_host_paths
	make_underlay
	for ((i = 1; i <= NODES; i++)); do
		make_node "$i"
		start_engine "$i"
	done
	# The plugin before the swarm: the engine tells a driver about the other nodes only as they
	# join its gossip, never again to a plugin enabled later (README: multi-host, install order).
	for i in $(nodes); do
		provision "$i"
	done
	form_swarm
	clog "up: $NODES nodes ($CLUSTER_ENGINE), all swarm managers, in $((SECONDS - start))s; try: $0 docker node1 node ls"
}

cmd_add() {
	[[ -e $ROOT/engine ]] || cdie "no cluster: run up first"
	local i=1 start=$SECONDS
	while [[ -d $(node_dir "$i") ]]; do ((i += 1)); done
	((i <= 9)) || cdie "9 nodes at most"
	make_node "$i"
	start_engine "$i"
	provision "$i"
	join_swarm "$i" "$(manager_token)"
	clog "add: node$i joined as a manager in $((SECONDS - start))s"
}

cmd_stop() {
	local i
	i=$(existing_node "$1")
	ip -n "$UL" link set "ul-node$i" down
	kill_node "$i"
	clog "node$i is down (engine, plugin and containers killed, underlay link down)"
}

cmd_start() {
	local i
	i=$(existing_node "$1")
	start_engine "$i"
	clog "node$i is up"
}

cmd_link() {
	local i state=$2
	i=$(existing_node "$1")
	ip -n "$UL" link set "ul-node$i" "$state"
}

cmd_status() {
	[[ -e $ROOT/engine ]] || { echo "no cluster"; return 3; }
	local i
	echo "engine: $(engine_of_cluster)"
	for i in $(nodes); do
		local link state
		link=down
		[[ $(ip -n "$UL" -o link show "ul-node$i" 2>/dev/null) == *"state UP"* ]] && link=up
		if engine_answers_on "$i"; then
			state=$(node_docker "$i" info --format '{{.Swarm.LocalNodeState}} ({{.Swarm.Managers}} managers, {{.Swarm.Nodes}} nodes)' 2>/dev/null)
		else
			state="engine down"
		fi
		echo "node$i $(node_addr "$i") link $link, swarm: $state"
	done
}

cmd_down() {
	local i
	for i in $(nodes); do
		kill_node "$i"
		umount "$(node_dir "$i")/mnt" 2>/dev/null || true
		umount "$(node_dir "$i")/uts" 2>/dev/null || true
		ip netns del "$(node_ns "$i")" 2>/dev/null || true
		remove_node_cgroups "$(node_data "$i")"
		rm -rf "$(node_data "$i")" "$(node_exec_root "$i")" "$(node_dir "$i")"
		rm -f "$(node_log "$i")"
	done
	ip netns del "$UL" 2>/dev/null || true
	if [[ -f $ROOT/created ]]; then
		local p
		# Directories only if still empty; /run/xtables.lock stays, the host's iptables may use it now.
		while read -r p; do
			if [[ -d $p ]]; then rmdir "$p" 2>/dev/null || true; fi
		done <"$ROOT/created"
	fi
	if mountpoint -q "$ROOT"; then umount "$ROOT"; fi
	rm -rf "$ROOT"
	rmdir "$DATA" 2>/dev/null || true
	local left
	left=$(ip netns list | grep -E '^ocl-' || true)
	[[ -z $left ]] || cdie "network namespaces left behind: $left"
	clog "down: nothing left"
}

case "${1:-}" in
up) cmd_up ;;
add) cmd_add ;;
down) cmd_down ;;
status) cmd_status ;;
stop | start)
	[[ $# == 2 ]] || cdie "usage: $0 $1 NODE"
	"cmd_$1" "$2"
	;;
partition) [[ $# == 2 ]] || cdie "usage: $0 partition NODE"; cmd_link "$2" down ;;
heal) [[ $# == 2 ]] || cdie "usage: $0 heal NODE"; cmd_link "$2" up ;;
docker)
	[[ $# -ge 2 ]] || cdie "usage: $0 docker NODE ARGS…"
	i=$(node_index "$2")
	shift 2
	DOCKER_HOST="unix://$(node_socket "$i")" exec docker "$@"
	;;
exec)
	[[ $# -ge 3 ]] || cdie "usage: $0 exec NODE CMD…"
	i=$(node_index "$2")
	shift 2
	in_node "$i" "$@"
	;;
*)
	sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
