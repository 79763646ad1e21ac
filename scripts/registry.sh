#!/usr/bin/env bash
# A throwaway local registry for `make push` and `docker plugin install` (the e2e suite's registry
# round trip): Debian's docker-registry (distribution 2.8) on 127.0.0.1:5000, its config, storage and
# log in a temporary directory. The engine talks plain HTTP to registries on 127.0.0.0/8.
#
#   scripts/registry.sh start   install docker-registry if missing, start it, wait until /v2/ answers
#   scripts/registry.sh stop    stop it and remove its directory (storage included)
#   scripts/registry.sh addr    print host:port (for REGISTRY=)
#
# Both are idempotent. REGISTRY_ADDR=127.0.0.1:PORT picks another port.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

readonly ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}
readonly STATE=/run/ournet-registry.dir # holds the path of the running registry's directory

die() { echo "registry.sh: error: $*" >&2; exit 1; }

answers() { curl -fsS -m 2 -o /dev/null "http://$ADDR/v2/" 2>/dev/null; }

# The registry's pid if the state names a live docker-registry process (a pid may be reused).
running_pid() {
	local dir pid
	[[ -f $STATE ]] || return 1
	dir=$(<"$STATE")
	[[ -f $dir/pid ]] || return 1
	pid=$(<"$dir/pid")
	[[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'docker-registry serve' || return 1
	echo "$pid"
}

install_registry() {
	command -v docker-registry >/dev/null && return 0
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
	# The package starts its own registry on :5000 with /var/lib/docker-registry: stop and disable it.
	if [[ -d /run/systemd/system ]]; then
		systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
	elif [[ -x /etc/init.d/docker-registry ]]; then
		/etc/init.d/docker-registry stop >/dev/null 2>&1 || true
		update-rc.d docker-registry disable >/dev/null 2>&1 || true
	fi
	command -v docker-registry >/dev/null || die "docker-registry is not on PATH after apt-get install docker-registry"
}

cmd_start() {
	if running_pid >/dev/null && answers; then
		echo "registry.sh: already running on $ADDR ($(<"$STATE"))"
		return 0
	fi
	cmd_stop >/dev/null # leftovers of a registry that died
	command -v curl >/dev/null || die "curl is missing: apt-get install curl"
	install_registry
	if answers; then
		die "something else answers on http://$ADDR/v2/ (the packaged docker-registry service?); stop it, or set REGISTRY_ADDR=127.0.0.1:PORT"
	fi
	local dir
	dir=$(mktemp -d /tmp/ournet-registry.XXXXXX)
	cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $ADDR
EOF
	mkdir -p "$dir/storage"
	echo "$dir" >"$STATE"
	# docker-registry reads REGISTRY_* variables as settings: it gets none of ours.
	env -u REGISTRY_ADDR setsid docker-registry serve "$dir/config.yml" </dev/null >"$dir/log" 2>&1 &
	local pid=$!
	echo "$pid" >"$dir/pid"
	# Whether it still runs is asked of the child itself, never of its cmdline: until the forked
	# shell has exec'd setsid and docker-registry (a cold binary on a fresh machine takes a while),
	# /proc/PID/cmdline is this script's, and running_pid would say it is gone.
	local i reaped=0 why="did not answer on http://$ADDR/v2/ within 10 s"
	for ((i = 0; i < 100; i++)); do # 10 s
		if answers; then
			echo "registry.sh: docker-registry on $ADDR (storage $dir/storage)"
			return 0
		fi
		if ! child_alive "$pid"; then
			local rc=0
			wait "$pid" || rc=$?
			reaped=1
			why="exited with status $rc before it answered on http://$ADDR/v2/"
			break
		fi
		sleep 0.1
	done
	# An unreaped child's pid cannot have been reused; a reaped one's may have.
	((reaped)) || kill -KILL "$pid" 2>/dev/null || true
	local log
	log=$(tail -n 20 "$dir/log" 2>/dev/null || true)
	cmd_stop >/dev/null
	die "docker-registry $why; its log:"$'\n'"${log:-(empty)}"
}

# Whether this script's background child PID still runs (exists and is not a zombie).
child_alive() {
	local stat
	stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ $stat != Z* ]]
}

cmd_stop() {
	[[ -f $STATE ]] || { echo "registry.sh: not running"; return 0; }
	local dir pid i
	dir=$(<"$STATE")
	if pid=$(running_pid); then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do # 5 s
			running_pid >/dev/null || break # gone, or a zombie (its cmdline is empty)
			sleep 0.1
		done
		if running_pid >/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	[[ $dir == /tmp/ournet-registry.* ]] && rm -rf "$dir"
	rm -f "$STATE"
	echo "registry.sh: stopped"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
addr) echo "$ADDR" ;;
*)
	echo "usage: $0 start | stop | addr" >&2
	exit 2
	;;
esac
