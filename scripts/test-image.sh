#!/usr/bin/env bash
# Builds the local test image ournet-test:latest without any registry: Debian's busybox-static plus the
# static Go probe (test/image/probe), imported from a tarball. Skips the import when an image with the
# same content hash label already exists.
#
#   scripts/test-image.sh [IMAGE]      (default ournet-test:latest)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

image=${1:-ournet-test:latest}
readonly HASH_LABEL=org.ournet.test-image.hash
readonly APPLETS=(sh ip nc httpd nslookup ping cat echo sleep hostname ifconfig route wget
	ls ps kill grep sed awk cut head tail wc tr env date true false test mkdir rm cp mv ln chmod
	netstat arp mount uname id printf seq timeout)

repo=$(cd "$(dirname "$0")/.." && pwd)

if [[ ! -x /bin/busybox ]]; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
fi
# A dynamic busybox (package "busybox") would need libc in the image.
ldd_out=$(LC_ALL=C ldd /bin/busybox 2>&1 || true)
if [[ $ldd_out != *"not a dynamic executable"* ]]; then
	echo "test-image.sh: /bin/busybox is not static; install busybox-static" >&2
	exit 1
fi

work=$(mktemp -d /tmp/ournet-test-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,usr/local/bin,etc,tmp,proc,sys,dev,root,run,var/www}
chmod 1777 "$rootfs/tmp"

(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$rootfs/usr/local/bin/probe" ./test/image/probe)
cp /bin/busybox "$rootfs/bin/busybox"
for applet in "${APPLETS[@]}"; do
	ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

# The hash covers every file, link and mode in the rootfs, so any change to probe or busybox rebuilds.
hash=$(cd "$rootfs" && find . -print0 | LC_ALL=C sort -z |
	xargs -0 stat -c '%n %a %F %N' | sha256sum | cut -c1-16)-$(cd "$rootfs" && find . -type f -print0 |
	LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)

current=$(docker image inspect "$image" --format "{{index .Config.Labels \"$HASH_LABEL\"}}" 2>/dev/null || true)
if [[ $current == "$hash" ]]; then
	echo "test-image.sh: $image is up to date ($hash)"
	exit 0
fi

tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf "$work/rootfs.tar" .
docker import \
	--change 'CMD ["/bin/sh"]' \
	--change "LABEL $HASH_LABEL=$hash" \
	--message "ournet test image: busybox-static + probe" \
	"$work/rootfs.tar" "$image" >/dev/null
echo "test-image.sh: built $image ($hash)"
