#!/usr/bin/env bash
# Installs the plugin directory built by scripts/build-rootfs.sh on the local engine as
# ournet/driver:latest, reachable as `-d ournet` / `--ipam-driver ournet`.
#
#   scripts/plugin.sh install [DIR]   (re)create and enable the plugin from DIR (default build/plugin)
#   scripts/plugin.sh uninstall       disable and remove it
#   scripts/plugin.sh logs            the plugin's lines from the engine log
#   scripts/plugin.sh push REF [DIR]  publish DIR as REF (REGISTRY/ournet/driver:TAG) with
#                                     `docker plugin push`, leaving no local plugin named REF
#
# Docker (20.10 and 29 alike) registers a managed plugin's drivers under its full name with the tag:
# `-d ournet:latest` works, `-d ournet` does not ("could not resolve driver ournet in registry").
# So the managed plugin is named ournet/driver:latest (which "ournet" does not resolve to), and the
# plugin itself serves its socket also as /run/docker/plugins/ALIAS.sock, which dockerd finds as the
# legacy plugin ALIAS (its setting ALIAS, default ournet; PLUGIN_ALIAS here sets it, empty: none).
# Installs before that published the alias as /etc/docker/plugins/ournet.spec and
# /var/lib/ournet-alias/: install and uninstall remove those.
set -euo pipefail

export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

readonly NAME=${PLUGIN_NAME:-ournet/driver:latest}
readonly ALIAS=${PLUGIN_ALIAS-ournet}
readonly OLD_ALIAS_DIR=/var/lib/ournet-alias # spec-file alias of older installs
repo=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "plugin.sh: error: $*" >&2; exit 1; }

engine_answers() { docker info >/dev/null 2>&1; }

plugin_exists() { docker plugin inspect "$NAME" >/dev/null 2>&1; }

remove_plugin() {
	if plugin_exists; then
		docker plugin disable -f "$NAME" >/dev/null 2>&1 || true
		docker plugin rm -f "$NAME" >/dev/null
	fi
}

cmd_install() {
	local dir=${1:-$repo/build/plugin}
	[[ -f $dir/config.json && -d $dir/rootfs ]] || die "$dir has no config.json and rootfs/; run \`make plugin\` first"
	# Start a test engine only when none answers: never restart an engine a user runs.
	if ! engine_answers; then
		"$repo/scripts/engine.sh" start
	fi
	# A missing bind-mount source makes `docker plugin enable` fail.
	install -d -m 0700 /var/lib/ournet # state files: root only
	[[ -e /run/xtables.lock ]] || touch /run/xtables.lock
	mkdir -p /run/docker/plugins # where the plugin serves its short name
	remove_plugin
	remove_old_alias
	if [[ ${OURNET_FRESH_STATE:-0} == 1 ]]; then
		# Test harness only (e2e.sh): the state of another engine's networks must not
		# be reconciled onto this one.
		rm -f /var/lib/ournet/networks.json /var/lib/ournet/ipam.json
	fi
	docker plugin create "$NAME" "$dir" >/dev/null
	if [[ -n $ALIAS ]]; then
		check_alias
	fi
	docker plugin set "$NAME" "ALIAS=$ALIAS"
	if ! docker plugin enable "$NAME" >/dev/null; then
		echo "plugin.sh: enabling $NAME failed; the plugin's last log lines:" >&2
		cmd_logs | tail -n 20 >&2 || true
		exit 1
	fi
	local id
	id=$(docker plugin inspect -f '{{.Id}}' "$NAME")
	echo "plugin.sh: $NAME enabled (${id:0:12})"
	if [[ -n $ALIAS ]]; then
		echo "plugin.sh: also reachable as -d $ALIAS / --ipam-driver $ALIAS (the plugin serves /run/docker/plugins/$ALIAS.sock)"
	fi
}

check_alias() {
	[[ $ALIAS =~ ^[a-z0-9][a-z0-9_.-]*$ ]] || die "PLUGIN_ALIAS=$ALIAS: use a bare name such as ournet"
	[[ $NAME != "$ALIAS:latest" && $NAME != "$ALIAS" ]] ||
		die "PLUGIN_ALIAS=$ALIAS needs a PLUGIN_NAME that $ALIAS does not resolve to, e.g. $ALIAS/driver:latest"
	# A managed plugin named ALIAS:latest would shadow the short name (Docker resolves ALIAS to it first).
	if docker plugin inspect "$ALIAS:latest" >/dev/null 2>&1; then
		echo "plugin.sh: removing $ALIAS:latest, which would shadow the short name" >&2
		docker plugin disable -f "$ALIAS:latest" >/dev/null 2>&1 || true
		docker plugin rm -f "$ALIAS:latest" >/dev/null
	fi
}

# Older installs published the short name as a spec file pointing into OLD_ALIAS_DIR; the
# plugin's own socket wins over it (dockerd checks /run/docker/plugins first), but with the
# short name turned off it would still answer for a plugin that no longer listens there.
remove_old_alias() {
	local spec
	for spec in /etc/docker/plugins/*.spec; do
		[[ -f $spec ]] && grep -qF "unix://$OLD_ALIAS_DIR/" "$spec" && rm -f "$spec"
	done
	rm -rf "$OLD_ALIAS_DIR"
}

cmd_uninstall() {
	engine_answers || die "no Docker engine answers"
	local networks
	networks=$(networks_using_ournet)
	if [[ -n $networks && ${FORCE:-0} != 1 ]]; then
		die "these networks use ournet: $(echo $networks); remove them first (docker network rm ...)," \
			"or run with FORCE=1 to remove the plugin anyway and leave their bridges and rules behind"
	fi
	remove_plugin
	remove_old_alias
	if [[ -n $networks ]]; then
		echo "plugin.sh: $NAME removed; the bridges and OURNET-* rules of $(echo $networks) stay" >&2
		return
	fi
	remove_host_leftovers
	echo "plugin.sh: $NAME removed, with its OURNET-* chains and bridges"
}

# Networks whose network driver or IPAM driver is ournet (under either name).
networks_using_ournet() {
	local name driver ipam
	docker network inspect -f '{{.Name}} {{.Driver}} {{.IPAM.Driver}}' $(docker network ls -q) |
		while read -r name driver ipam; do
			for used in "$driver" "$ipam"; do
				if [[ $used == "$NAME" || ( -n $ALIAS && $used == "$ALIAS" ) ]]; then
					echo "$name"
					break
				fi
			done
		done
}

# With no ournet network left, nothing needs ournet's chains, jumps or links.
remove_host_leftovers() {
	local tool table rule chain link chains
	for tool in iptables ip6tables; do
		command -v "$tool-save" >/dev/null || continue
		for table in filter nat raw; do
			# Jumps from the built-in chains carry no comment, so the saved rule
			# splits into words safely.
			while read -r rule; do
				# shellcheck disable=SC2086
				"$tool" -t "$table" -D ${rule#-A } 2>/dev/null || true
			done < <("$tool-save" -t "$table" 2>/dev/null | grep -E '^-A [A-Z]+ .*-j OURNET-' || true)
			# ournet's chains jump to each other: empty them all, then delete them.
			mapfile -t chains < <("$tool-save" -t "$table" 2>/dev/null | sed -n 's/^:\(OURNET-[A-Za-z0-9_.-]*\) .*/\1/p')
			for chain in "${chains[@]}"; do
				"$tool" -t "$table" -F "$chain" 2>/dev/null || true
			done
			for chain in "${chains[@]}"; do
				"$tool" -t "$table" -X "$chain" 2>/dev/null || true
			done
		done
	done
	while read -r link; do
		ip link delete "$link" 2>/dev/null || true
	done < <(ip -o link show | sed -n 's/^[0-9]*: \(on[-vc][0-9a-f]\{12\}\)[@:].*/\1/p')
}

cmd_push() {
	local ref=${1:-} dir=${2:-$repo/build/plugin}
	[[ $ref =~ ^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
		die "push: REF=$ref: want REGISTRY/ournet/driver:TAG, e.g. 127.0.0.1:5000/ournet/driver:v1 (make push REGISTRY=host:port TAG=...)"
	[[ -f $dir/config.json && -d $dir/rootfs ]] || die "$dir has no config.json and rootfs/; run \`make plugin\` first"
	engine_answers || die "push: no Docker engine answers (docker plugin create and push need one)"
	if docker plugin inspect "$ref" >/dev/null 2>&1; then
		[[ $(docker plugin inspect -f '{{.Enabled}}' "$ref") == false ]] ||
			die "push: $ref is installed and enabled here; disable and remove it first (docker plugin disable $ref; docker plugin rm $ref)"
		docker plugin rm "$ref" >/dev/null # a leftover of an interrupted push
	fi
	docker plugin create "$ref" "$dir" >/dev/null
	# The local copy only exists to be pushed: it must not shadow an installed plugin.
	local status=0
	docker plugin push "$ref" || status=$?
	docker plugin rm -f "$ref" >/dev/null 2>&1 || true
	((status == 0)) || die "push: docker plugin push $ref failed (exit $status)"
	echo "plugin.sh: pushed $ref; install it with: docker plugin install --grant-all-permissions $ref"
}

# dockerd logs a managed plugin's stdout and stderr with plugin=<full id>.
cmd_logs() {
	local id
	if id=$(docker plugin inspect -f '{{.Id}}' "$NAME" 2>/dev/null); then
		"$repo/scripts/engine.sh" logs | grep -F "plugin=$id" || true
	else
		"$repo/scripts/engine.sh" logs | grep -F "plugin=" || true
	fi
}

case "${1:-}" in
install) shift; cmd_install "$@" ;;
uninstall) cmd_uninstall ;;
logs) cmd_logs ;;
push) shift; cmd_push "$@" ;;
*)
	echo "usage: $0 install [DIR] | uninstall | logs | push REF [DIR]" >&2
	exit 2
	;;
esac
