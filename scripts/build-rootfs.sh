#!/usr/bin/env bash
# Assembles the managed plugin's directory: OUT_DIR/config.json and OUT_DIR/rootfs/ with
#   /usr/bin/ournet            static build of ./plugin
#   /usr/sbin/xtables-*-multi  the host's iptables, both backends, with their libraries, loader and the
#                              dlopened extensions (/usr/lib/x86_64-linux-gnu/xtables)
#   /usr/sbin/iptables*        links to the backend the host uses (for humans debugging the plugin;
#                              ournet calls xtables-nft-multi / xtables-legacy-multi explicitly)
#
#   scripts/build-rootfs.sh OUT_DIR
#   PLUGIN_DIR=DIR    build the plugin from another main package (default: ./plugin of this repo)
#   IPTABLES_BACKEND=nft|legacy   backend of the iptables links (default: the one holding dockerd's
#                     chains, else the host's alternatives link)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

die() { echo "build-rootfs.sh: error: $*" >&2; exit 1; }

(($# == 1)) || die "usage: $0 OUT_DIR"
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
plugin_dir=${PLUGIN_DIR:-$repo/plugin}
[[ -d $plugin_dir ]] || die "$plugin_dir not found: the plugin program is the main package in ./plugin"

readonly XTABLES_BINARIES=(/usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi)
readonly XTABLES_EXTENSIONS=/usr/lib/x86_64-linux-gnu/xtables

if [[ ! -x ${XTABLES_BINARIES[0]} || ! -x ${XTABLES_BINARIES[1]} || ! -d $XTABLES_EXTENSIONS ]]; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends iptables >/dev/null
fi

rootfs=$out/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"

# Same merged-/usr layout as the host, so every path ldd prints resolves the same way in the rootfs.
for dir in bin sbin lib lib64; do
	if [[ -L /$dir ]]; then
		ln -s "$(readlink "/$dir")" "$rootfs/$dir"
		mkdir -p "$rootfs/$(readlink -f "/$dir")"
	fi
done
mkdir -p "$rootfs"/{usr/bin,usr/sbin,etc,run,tmp,proc,sys,dev,var/lib/ournet,run/docker/plugins}
chmod 1777 "$rootfs/tmp"

# Copies a host file into the rootfs at the same path, following and recreating each symlink on the way.
copy_host_file() {
	local path=$1
	while :; do
		[[ -e $rootfs$path || -L $rootfs$path ]] && [[ ! -L $path ]] && return 0
		mkdir -p "$rootfs$(dirname "$path")"
		if [[ -L $path ]]; then
			[[ -e $rootfs$path || -L $rootfs$path ]] || cp -P "$path" "$rootfs$path"
			local target
			target=$(readlink "$path")
			[[ $target == /* ]] || target=$(dirname "$path")/$target
			path=$(realpath -s "$target")
			continue
		fi
		cp "$path" "$rootfs$path"
		return 0
	done
}

# Copies a binary or library and every library ldd says it needs (the loader included).
copy_with_libraries() {
	local file=$1 lib
	copy_host_file "$file"
	while read -r lib; do
		copy_host_file "$lib"
	done < <(LC_ALL=C ldd "$file" 2>/dev/null | grep -oE '(^|[[:space:]])/[^ ]+' | sed 's/^[[:space:]]*//' | sort -u)
}

for binary in "${XTABLES_BINARIES[@]}"; do
	copy_with_libraries "$binary"
done
for extension in "$XTABLES_EXTENSIONS"/*.so; do
	copy_with_libraries "$extension"
done
for file in /etc/protocols /etc/ethertypes /etc/services; do
	[[ -f $file ]] && copy_host_file "$file"
done

backend=${IPTABLES_BACKEND:-}
if [[ -z $backend ]]; then
	if xtables-nft-multi iptables -t filter -S DOCKER >/dev/null 2>&1; then
		backend=nft
	elif grep -qx filter /proc/net/ip_tables_names 2>/dev/null &&
		xtables-legacy-multi iptables -t filter -S DOCKER >/dev/null 2>&1; then
		# (probing legacy only when its filter table exists: the probe would load it otherwise)
		backend=legacy
	elif [[ $(readlink -f "$(command -v iptables)") == *legacy* ]]; then
		backend=legacy
	else
		backend=nft
	fi
fi
case "$backend" in nft | legacy) ;; *) die "IPTABLES_BACKEND=$backend: must be nft or legacy" ;; esac
for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
	ln -sf "xtables-$backend-multi" "$rootfs/usr/sbin/$name"
done
for variant in nft legacy; do
	for name in iptables ip6tables; do
		for suffix in "" -save -restore; do
			ln -sf "xtables-$variant-multi" "$rootfs/usr/sbin/$name-$variant$suffix"
		done
	done
done

(cd "$plugin_dir" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$rootfs/usr/bin/ournet" .)
cp "$repo/config.json" "$out/config.json"

[[ -x $rootfs/usr/bin/ournet ]] || die "no $rootfs/usr/bin/ournet after the build"
ldd_out=$(LC_ALL=C ldd "$rootfs/usr/bin/ournet" 2>&1 || true)
[[ $ldd_out == *"not a dynamic executable"* ]] || die "/usr/bin/ournet is not static: $ldd_out"

# The rootfs must run iptables on its own: both backends, an extension (dlopen) and the links.
for check in "xtables-nft-multi iptables -V" "xtables-legacy-multi iptables -V" "iptables -V" \
	"xtables-$backend-multi iptables -m conntrack -m addrtype -j MASQUERADE -h"; do
	# shellcheck disable=SC2086 # the check is a word list
	chroot "$rootfs" /usr/sbin/$check >/dev/null 2>&1 || die "in the rootfs, \`$check\` fails: $(chroot "$rootfs" /usr/sbin/$check 2>&1 | tail -1)"
done
echo "build-rootfs.sh: $out ready (iptables links: $backend, $(du -sh "$rootfs" | cut -f1))"
