#!/usr/bin/env bash
# Test engine helper: runs one Docker engine at a time on the default socket.
#
#   scripts/engine.sh start|stop|restart|status|logs [-f]|root      (root: the engine's exec root)
#
#   ENGINE=debian     Debian 12's docker.io (Docker 20.10), installed with apt when missing (default).
#                     Runs on Docker's default paths (data root /var/lib/docker, exec root
#                     /var/run/docker), as a systemd-managed engine does.
#   ENGINE=moby28     Docker 28 (github.com/docker/docker v28.5.2, what hosted CI runners ship) built
#                     from the Go module proxy, cached in /var/cache/ournet/moby28
#   ENGINE=moby29     Docker 29 (moby v2.0.0-beta.24) built from the Go module proxy, cached in
#                     /var/cache/ournet/moby29
#   ENGINE=moby29nft  the same Docker 29 binaries with "firewall-backend": "nftables": the engine keeps
#                     its rules in nft tables (ip/ip6 docker-bridges, through the nft tool, installed
#                     with apt when missing) and never touches iptables. It starts from a host without
#                     Docker's iptables rules (those the other engines left are removed), as on a fresh
#                     machine: no DOCKER chains, FORWARD policy ACCEPT.
#   LIVE_RESTORE=1    start dockerd with --live-restore (restart keeps the flags of the last start)
#
# The built engines run with Debian's containerd and runc. Each engine has its own pid file, config file
# and log; all but debian have their own data root and exec root too. Each supervises its own containerd
# (under its exec root), so switching engines never mixes their state. All listen on
# unix:///var/run/docker.sock so plain `docker` works. Managed plugins' sockets are under
# /run/docker/plugins/<id>/ whatever the exec root (moby hard-codes it on Linux).
#
# Docker CLI: moby v2.0.0-beta.24 serves API 1.56 and accepts clients down to API 1.40, so Debian's
# docker client (20.10, API 1.41) and newer ones (28.x negotiates 1.50) all work against both engines
# without DOCKER_API_VERSION. Checked with `docker version` and `docker run` on both engines.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
unset DOCKER_HOST DOCKER_CONTEXT

readonly SOCKET=/var/run/docker.sock
readonly STATE_DIR=/run/ournet-engine        # which engine runs, and its flags
readonly CONF_ROOT=/var/lib/ournet-engine    # per-engine daemon.json and runtime wrapper
readonly MOBY29_VERSION=v2.0.0-beta.24
readonly MOBY29_CACHE=/var/cache/ournet/moby29
readonly MOBY28_VERSION=v28.5.2
readonly MOBY28_CACHE=/var/cache/ournet/moby28
readonly START_TIMEOUT=${START_TIMEOUT:-60}
readonly STOP_TIMEOUT=${STOP_TIMEOUT:-30}

log() { echo "engine.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (dockerd needs it)"

engine_names=(debian moby28 moby29 moby29nft)

# debian runs where a distribution's docker.service runs: Docker's defaults.
data_root() {
	case "$1" in
	debian) echo /var/lib/docker ;;
	*) echo "/var/lib/docker-$1" ;;
	esac
}
# Exec roots stay short: containerd's sockets live under them (unix socket paths: max 107 chars).
exec_root() {
	case "$1" in
	debian) echo /var/run/docker ;;
	*) echo "/run/docker-$1" ;;
	esac
}
pid_file() { echo "/run/docker-$1.pid"; }
log_file() { echo "/var/log/ournet-engine-$1.log"; }
config_file() { echo "$CONF_ROOT/$1/daemon.json"; }
args_file() { echo "$STATE_DIR/$1.args"; }

check_engine_name() {
	case "$1" in
	debian | moby28 | moby29 | moby29nft) ;;
	*) die "unknown ENGINE=$1 (use debian, moby28, moby29 or moby29nft)" ;;
	esac
}

pid_of() {
	local pf
	pf=$(pid_file "$1")
	[[ -s $pf ]] || return 1
	local pid
	pid=$(<"$pf")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
	# A stale pid file may name an unrelated process: insist on dockerd.
	[[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || return 1
	echo "$pid"
}

running_engine() {
	local e
	for e in "${engine_names[@]}"; do
		if pid_of "$e" >/dev/null; then
			echo "$e"
			return 0
		fi
	done
	return 1
}

socket_answers() {
	curl -fsS --max-time 3 --unix-socket "$SOCKET" http://localhost/_ping >/dev/null 2>&1
}

apt_install() {
	log "installing with apt: $*"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_host_packages() {
	local missing=()
	command -v dockerd >/dev/null || missing+=(docker.io)
	[[ -x /usr/bin/containerd ]] || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	command -v iptables >/dev/null || missing+=(iptables)
	[[ -x /bin/busybox ]] || missing+=(busybox-static)
	command -v brctl >/dev/null || missing+=(bridge-utils)
	command -v curl >/dev/null || missing+=(curl)
	command -v ip >/dev/null || missing+=(iproute2)
	command -v jq >/dev/null || missing+=(jq)
	command -v strace >/dev/null || missing+=(strace) # TestRegistryStartWaitsForSlowExec
	if ((${#missing[@]})); then
		apt_install "${missing[@]}"
		# On a systemd host the package starts its own dockerd on our socket: the test engines replace it.
		if [[ " ${missing[*]} " == *" docker.io "* ]] && command -v systemctl >/dev/null &&
			systemctl is-active --quiet docker.service docker.socket 2>/dev/null; then
			log "stopping and disabling the docker.service apt just started"
			systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
		fi
	fi
}

# Builds dockerd and docker-proxy of MOBY29_VERSION once; the stamp file names the version built.
ensure_moby29() {
	local bin=$MOBY29_CACHE/bin stamp=$MOBY29_CACHE/VERSION
	# go install leaves the version "library-import"; name the module version in `docker version`.
	local ldflags="-X github.com/moby/moby/v2/dockerversion.Version=$MOBY29_VERSION"
	ldflags+=" -X github.com/moby/moby/v2/dockerversion.GitCommit=$MOBY29_VERSION"
	if [[ -x $bin/dockerd && -x $bin/docker-proxy && -f $stamp && $(<"$stamp") == "$MOBY29_VERSION" ]]; then
		return 0
	fi
	command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go); needed to build Docker 29"
	mkdir -p "$bin"
	rm -f "$stamp"
	log "building Docker 29 (moby $MOBY29_VERSION) into $bin, takes a few minutes"
	local start=$SECONDS
	(cd /tmp && GOBIN=$bin GOFLAGS=-buildvcs=false go install -ldflags="$ldflags" \
		"github.com/moby/moby/v2/cmd/dockerd@$MOBY29_VERSION" \
		"github.com/moby/moby/v2/cmd/docker-proxy@$MOBY29_VERSION")
	echo "$MOBY29_VERSION" >"$stamp"
	log "built Docker 29 in $((SECONDS - start))s"
}

# Builds dockerd and docker-proxy of MOBY28_VERSION once, as moby's hack/make/binary-daemon and
# binary-proxy do (static, tags netgo osusergo static_build, version stamped by ldflags). moby v28 is
# github.com/docker/docker, a GOPATH-era repository with vendor.mod/vendor.sum and no go.mod; its module
# zip holds no vendor/ tree, so it is built as the main module with vendor.mod as go.mod, its
# dependencies fetched from the module proxy and checked against vendor.sum.
ensure_moby28() {
	local bin=$MOBY28_CACHE/bin stamp=$MOBY28_CACHE/VERSION
	if [[ -x $bin/dockerd && -x $bin/docker-proxy && -f $stamp && $(<"$stamp") == "$MOBY28_VERSION" ]]; then
		return 0
	fi
	command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go); needed to build Docker 28"
	command -v gcc >/dev/null || apt_install gcc libc6-dev # dockerd links statically with cgo, as moby builds it
	local module=github.com/docker/docker@$MOBY28_VERSION+incompatible dir src
	log "building Docker 28 ($module) into $bin, takes a few minutes"
	local start=$SECONDS
	dir=$(cd /tmp && go mod download -json "$module" | jq -r .Dir) || die "go mod download $module failed"
	[[ -f $dir/vendor.mod && -f $dir/vendor.sum ]] || die "$module has no vendor.mod/vendor.sum in $dir"
	src=$(mktemp -d /var/tmp/ournet-moby28.XXXXXX)
	# shellcheck disable=SC2064 # expand now: src is local
	trap "rm -rf '$src'" EXIT
	cp -a "$dir/." "$src/"
	chmod -R u+w "$src"
	# vendor/ holds only modules.txt, which would make go select -mod=vendor.
	rm -rf "$src/vendor"
	cp "$src/vendor.mod" "$src/go.mod"
	cp "$src/vendor.sum" "$src/go.sum"
	local version=${MOBY28_VERSION#v}
	local ldflags="-w -X github.com/docker/docker/dockerversion.Version=$version"
	ldflags+=" -X github.com/docker/docker/dockerversion.GitCommit=$MOBY28_VERSION"
	mkdir -p "$bin"
	rm -f "$stamp"
	(
		cd "$src"
		export GO111MODULE=on GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false"
		go build -tags "netgo osusergo static_build" -ldflags "$ldflags -extldflags -static" \
			-o "$bin/dockerd" ./cmd/dockerd
		CGO_ENABLED=0 go build -tags "netgo osusergo static_build" -ldflags "$ldflags" \
			-o "$bin/docker-proxy" ./cmd/docker-proxy
	) || die "building Docker 28 failed (sources kept until exit in $src)"
	rm -rf "$src"
	trap - EXIT
	echo "$MOBY28_VERSION" >"$stamp"
	log "built Docker 28 in $((SECONDS - start))s"
}

# Docker's nftables firewall runs the nft tool (moby's static builds have no libnftables).
ensure_nft() {
	command -v nft >/dev/null || apt_install nftables
}

# With the nftables firewall, dockerd neither enables IP forwarding nor sets a FORWARD policy; it refuses
# to create a bridge network while net.ipv4.ip_forward is 0 ("IPv4 forwarding is disabled: check your
# host's firewalling and set sysctl net.ipv4.ip_forward=1"). Docker's docs tell users to set it: so do we.
ensure_ip_forward() {
	if [[ $(cat /proc/sys/net/ipv4/ip_forward) != 1 ]]; then
		log "setting net.ipv4.ip_forward=1 (Docker's nftables firewall requires it, and never sets it)"
		echo 1 >/proc/sys/net/ipv4/ip_forward
	fi
}

# The filter for iptables-save output that drops everything dockerd's iptables firewall made: its
# DOCKER* chains, the rules jumping to them, the rules naming its bridges (docker0, br-<12 hex>), and
# sets the FORWARD policy back to ACCEPT. Everything else (ournet's OURNET-* chains, the host's own
# rules) is kept as it is. (mawk: no {n} intervals in regular expressions.)
readonly DROP_DOCKER_AWK='
/^:FORWARD / && table == "filter" { print ":FORWARD ACCEPT [0:0]"; next }
/^\*/ { table = substr($0, 2) }
/^:DOCKER/ { next }
/^-A / && $2 !~ /^OURNET-/ {
	for (i = 2; i <= NF; i++) if ($i ~ /^DOCKER/ || $i == "docker0" || ($i ~ /^br-[0-9a-f]+$/ && length($i) == 15)) next
}
{ print }'

# Removes what the iptables engines left in iptables (both backends, both families), so that the
# nftables engine runs on a host like a fresh one. Tables are replaced one at a time, atomically.
drop_docker_iptables() {
	local multi family table saved filtered
	for multi in xtables-nft-multi xtables-legacy-multi; do
		command -v "$multi" >/dev/null || continue
		for family in iptables ip6tables; do
			for table in filter nat raw mangle; do
				if [[ $multi == xtables-legacy-multi ]]; then
					# Only tables that exist: saving one would load its kernel module.
					local names=/proc/net/ip_tables_names
					[[ $family == ip6tables ]] && names=/proc/net/ip6_tables_names
					grep -qx "$table" "$names" 2>/dev/null || continue
				fi
				saved=$("$multi" "$family-save" -t "$table" 2>/dev/null) || continue
				[[ -n $saved ]] || continue
				filtered=$(awk "$DROP_DOCKER_AWK" <<<"$saved")
				[[ $filtered != "$saved" ]] || continue
				log "removing Docker's iptables rules from $family $table (${multi%-multi})"
				"$multi" "$family-restore" -w 5 -T "$table" <<<"$filtered" ||
					die "$family-restore of table $table (${multi%-multi}) failed"
			done
		done
	done
}

# dockerd with the nftables firewall leaves its tables behind when it stops; the iptables engines
# never read them, but a host switching engines should not keep them.
drop_docker_nft_tables() {
	command -v nft >/dev/null || return 0
	local family
	for family in ip ip6; do
		if nft list table "$family" docker-bridges >/dev/null 2>&1; then
			nft delete table "$family" docker-bridges || log "could not delete nft table $family docker-bridges"
		fi
	done
}

# Debian's runc 1.1.5 has no time namespace and Docker 29 requests one for managed plugins even with
# features.time-namespaces=false. This wrapper, the moby29 default runtime, drops it from the bundle's
# config.json and execs runc with the same arguments. Test-engine glue only.
write_runc_wrapper() {
	local wrapper=$1 runc jq
	runc=$(command -v runc) || die "runc not found"
	jq=$(command -v jq) || die "jq not found"
	cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# Generated by scripts/engine.sh: removes the time namespace runc $runc cannot create, then runs it.
set -e
cmd= bundle=
expect=
for arg in "\$@"; do
	if [ -n "\$expect" ]; then
		[ "\$expect" = bundle ] && bundle=\$arg
		expect=
		continue
	fi
	if [ -z "\$cmd" ]; then
		case "\$arg" in
		--root | --log | --log-format | --criu | --rootless) expect=skip ;;
		-*) ;;
		*) cmd=\$arg ;;
		esac
		continue
	fi
	case "\$arg" in
	--bundle | -b) expect=bundle ;;
	--bundle=*) bundle=\${arg#--bundle=} ;;
	esac
done
case "\$cmd" in
create | run)
	config=\${bundle:-.}/config.json
	if [ -f "\$config" ] && grep -q '"time"' "\$config"; then
		$jq -c 'if .linux.namespaces then .linux.namespaces |= map(select(.type != "time")) else . end' \\
			"\$config" >"\$config.ournet-tmp"
		mv "\$config.ournet-tmp" "\$config"
	fi
	;;
esac
exec $runc "\$@"
EOF
	chmod 755 "$wrapper.tmp"
	mv "$wrapper.tmp" "$wrapper"
}

write_config() {
	local engine=$1 conf
	conf=$(config_file "$engine")
	mkdir -p "$(dirname "$conf")"
	case "$engine" in
	debian)
		# Own (empty) config file: a host /etc/docker/daemon.json must not change the test engine.
		echo '{}' >"$conf"
		;;
	moby28)
		# Docker 28 creates no time namespace: Debian's runc runs it as it is.
		echo '{}' >"$conf"
		;;
	moby29 | moby29nft)
		local wrapper=$CONF_ROOT/$engine/ournet-runc firewall=iptables
		[[ $engine == moby29nft ]] && firewall=nftables
		write_runc_wrapper "$wrapper"
		jq -n --arg wrapper "$wrapper" --arg firewall "$firewall" '{
			features: {"time-namespaces": false},
			runtimes: {"ournet-runc": {path: $wrapper}},
			"default-runtime": "ournet-runc"
		} + if $firewall == "nftables" then {"firewall-backend": "nftables"} else {} end' >"$conf"
		;;
	esac
}

dockerd_binary() {
	case "$1" in
	debian) echo /usr/sbin/dockerd ;;
	moby28) echo "$MOBY28_CACHE/bin/dockerd" ;;
	moby29 | moby29nft) echo "$MOBY29_CACHE/bin/dockerd" ;;
	esac
}

# The flags a start uses; restart re-reads them from args_file.
engine_args() {
	local engine=$1
	local args=(
		--host "unix://$SOCKET"
		--data-root "$(data_root "$engine")"
		--exec-root "$(exec_root "$engine")"
		--pidfile "$(pid_file "$engine")"
		--config-file "$(config_file "$engine")"
	)
	if [[ ${LIVE_RESTORE:-0} == 1 ]]; then
		args+=(--live-restore)
	fi
	printf '%s\n' "${args[@]}"
}

# Waits until CHECK… succeeds for the engine NAME just launched as PID (logging to LOGF); if it exits or
# does not answer within START_TIMEOUT, shows the end of its log and exits.
await_engine() {
	local name=$1 pid=$2 logf=$3
	shift 3
	local deadline=$((SECONDS + START_TIMEOUT))
	until "$@"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "dockerd ($name) exited during start; last log lines:"
			tail -n 40 "$logf" >&2
			exit 1
		fi
		if ((SECONDS > deadline)); then
			log "dockerd ($name) did not answer within ${START_TIMEOUT}s; last log lines:"
			tail -n 40 "$logf" >&2
			exit 1
		fi
		sleep 0.5
	done
}

launch() {
	local engine=$1
	shift
	local dockerd logf
	dockerd=$(dockerd_binary "$engine")
	logf=$(log_file "$engine")
	mkdir -p "$(data_root "$engine")" "$(exec_root "$engine")" "$STATE_DIR"
	printf '%s\n' "$@" >"$(args_file "$engine")"
	echo "$engine" >"$STATE_DIR/current"
	# The built engines find their own docker-proxy first.
	local env_args=()
	case "$engine" in
	moby28 | moby29 | moby29nft) env_args=(PATH="$(dirname "$dockerd"):$PATH") ;;
	esac
	log "starting $engine: $dockerd $*"
	echo "=== $(date -Is) engine.sh start: $dockerd $*" >>"$logf"
	env "${env_args[@]}" setsid nohup "$dockerd" "$@" </dev/null >>"$logf" 2>&1 &
	local launched=$!

	await_engine "$engine" "$launched" "$logf" socket_answers
	if ! docker info >/dev/null 2>&1; then
		log "dockerd ($engine) answers /_ping but \`docker info\` fails:"
		docker info >&2 || true
		exit 1
	fi
	log "$engine is up (pid $(pid_of "$engine" || echo "$launched")), log: $logf"
}

# Stops dockerd only (containers survive with --live-restore).
stop_dockerd() {
	local engine=$1 pid
	pid=$(pid_of "$engine") || return 0
	log "stopping $engine (pid $pid)"
	kill -TERM "$pid"
	local deadline=$((SECONDS + STOP_TIMEOUT))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS > deadline)); then
			log "dockerd $pid still running after ${STOP_TIMEOUT}s, killing it"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 1
			break
		fi
		sleep 0.3
	done
	echo "=== $(date -Is) engine.sh stopped pid $pid" >>"$(log_file "$engine")"
}

# After a --live-restore stop, the engine's supervised containerd and its shims keep running: end them
# so that the next engine starts from a clean host. Only processes of this engine's exec root.
stop_leftovers() {
	local engine=$1 root cpid
	root=$(exec_root "$engine")
	local address="$root/containerd/containerd.sock"
	# /var/run is a link to /run: a shim may name either spelling of debian's default exec root.
	local real_address
	real_address="$(readlink -f "$root" 2>/dev/null || echo "$root")/containerd/containerd.sock"
	local proc pid cmdline child
	for proc in /proc/[0-9]*; do
		pid=${proc#/proc/}
		cmdline=$( { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || continue
		[[ $cmdline == *containerd-shim-runc-v2\ * ]] || continue
		[[ $cmdline == *"-address $address "* || $cmdline == *"-address $real_address "* ]] || continue
		# The shim's children are the container's (or plugin's) processes.
		# shellcheck disable=SC2013 # one pid per line
		for child in $(awk -v ppid="$pid" '$4 == ppid { print $1 }' /proc/[0-9]*/stat 2>/dev/null); do
			kill -KILL "$child" 2>/dev/null || true
		done
		log "ending leftover shim $pid of $engine and its container"
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [[ -s $root/containerd/containerd.pid ]]; then
		cpid=$(<"$root/containerd/containerd.pid")
		if [[ $cpid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$cpid/comm" 2>/dev/null) == containerd ]]; then
			log "ending leftover containerd $cpid of $engine"
			kill -TERM "$cpid" 2>/dev/null || true
			local deadline=$((SECONDS + 15))
			while kill -0 "$cpid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.3; done
			kill -KILL "$cpid" 2>/dev/null || true
		fi
	fi
}

# A dockerd that was killed (the fault tests SIGKILL it) leaves the empty files its containers' network
# namespaces were mounted on in <exec root>/netns. Once no engine runs, those no longer mounted are
# debris: remove them. A file still mounted is a namespace that outlived its engine: report it and fail.
# Never while any dockerd runs: an engine engine.sh did not start may share debian's default exec root.
drop_netns_files() {
	local dir f left=()
	dir=$(exec_root "$1")/netns
	[[ -d $dir ]] || return 0
	if pgrep -x dockerd >/dev/null; then return 0; fi
	for f in "$dir"/*; do
		[[ -e $f ]] || continue
		if mountpoint -q "$f"; then left+=("$f"); else rm -f "$f"; fi
	done
	if ((${#left[@]})); then
		log "network namespaces still mounted after $1 stopped: ${left[*]}"
		return 1
	fi
}

cmd_stop() {
	local engines=("${engine_names[@]}")
	[[ -n ${ENGINE:-} ]] && engines=("$ENGINE")
	local e failed=0
	for e in "${engines[@]}"; do
		check_engine_name "$e"
		stop_dockerd "$e"
		stop_leftovers "$e"
		if [[ $e == moby29nft ]]; then drop_docker_nft_tables; fi
		drop_netns_files "$e" || failed=1
	done
	rm -f "$STATE_DIR/current"
	return "$failed"
}

cmd_start() {
	local engine=${ENGINE:-debian}
	check_engine_name "$engine"
	ensure_host_packages
	case "$engine" in
	moby28) ensure_moby28 ;;
	moby29) ensure_moby29 ;;
	moby29nft) ensure_moby29 && ensure_nft ;;
	esac

	local other
	for other in "${engine_names[@]}"; do
		if [[ $other != "$engine" ]] && pid_of "$other" >/dev/null; then
			log "$other is running; stopping it first (one engine at a time)"
			stop_dockerd "$other"
			stop_leftovers "$other"
			if [[ $other == moby29nft ]]; then drop_docker_nft_tables; fi
		fi
	done

	write_config "$engine"
	local wanted=()
	mapfile -t wanted < <(engine_args "$engine")
	if pid_of "$engine" >/dev/null; then
		if [[ -f $(args_file "$engine") && "$(printf '%s\n' "${wanted[@]}")" == "$(<"$(args_file "$engine")")" ]] &&
			socket_answers; then
			log "$engine already running with the same flags"
			return 0
		fi
		log "$engine running with other flags; restarting it"
		stop_dockerd "$engine"
	elif socket_answers; then
		die "another Docker engine (not started by engine.sh) answers on $SOCKET; stop it first"
	fi
	if [[ $engine == moby29nft ]]; then
		# Before dockerd starts: the engine and the plugin come up on a host like a fresh one. That
		# rewrites the host's iptables (FORWARD policy, DOCKER-USER), so only on a throwaway machine:
		# .ci/run sets OURNET_FRESH_FIREWALL=1.
		if [[ ${OURNET_FRESH_FIREWALL:-0} == 1 ]]; then
			drop_docker_iptables
		else
			log "keeping the host's iptables rules (set OURNET_FRESH_FIREWALL=1 on a throwaway machine to start moby29nft on a fresh-host firewall)"
		fi
		ensure_ip_forward
	fi
	launch "$engine" "${wanted[@]}"
}

cmd_restart() {
	local engine=${ENGINE:-}
	if [[ -z $engine ]]; then
		engine=$(running_engine) || engine=$(cat "$STATE_DIR/current" 2>/dev/null) || engine=debian
	fi
	check_engine_name "$engine"
	local args=()
	if [[ -n ${LIVE_RESTORE:-} || ! -f $(args_file "$engine") ]]; then
		mapfile -t args < <(engine_args "$engine")
	else
		mapfile -t args <"$(args_file "$engine")"
	fi
	stop_dockerd "$engine"
	write_config "$engine"
	launch "$engine" "${args[@]}"
}

cmd_status() {
	local engine
	if engine=$(running_engine); then
		echo "engine: $engine (pid $(pid_of "$engine"))"
		echo "flags: $(tr '\n' ' ' <"$(args_file "$engine")" 2>/dev/null)"
		echo "log: $(log_file "$engine")"
		if socket_answers; then
			docker version --format 'server: {{.Server.Version}} (API {{.Server.APIVersion}}), client: {{.Client.Version}}' || true
		else
			echo "socket: $SOCKET does not answer"
			return 3
		fi
	elif socket_answers; then
		echo "engine: not started by engine.sh, but $SOCKET answers"
	else
		echo "engine: none running"
		return 3
	fi
}

cmd_logs() {
	local engine=${ENGINE:-}
	if [[ -z $engine ]]; then
		engine=$(running_engine) || engine=$(cat "$STATE_DIR/current" 2>/dev/null) || engine=debian
	fi
	check_engine_name "$engine"
	local logf
	logf=$(log_file "$engine")
	[[ -f $logf ]] || die "no log for $engine yet ($logf)"
	if [[ ${1:-} == -f ]]; then
		exec tail -n 100 -F "$logf"
	fi
	cat "$logf"
}

# Sourced (scripts/cluster.sh): the functions above only.
if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
	return 0
fi

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
restart) cmd_restart ;;
status) cmd_status ;;
logs) shift; cmd_logs "$@" ;;
root) check_engine_name "${ENGINE:-debian}" && exec_root "${ENGINE:-debian}" ;;
*)
	echo "usage: [ENGINE=debian|moby28|moby29|moby29nft] [LIVE_RESTORE=1] $0 start|stop|restart|status|logs [-f]|root" >&2
	exit 2
	;;
esac
