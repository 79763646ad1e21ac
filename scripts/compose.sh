#!/usr/bin/env bash
# Prints the path of a Docker Compose v2 binary, building it once into a cache:
#
#   scripts/compose.sh          -> /var/cache/ournet/compose/v2.40.3/docker-compose
#
#   COMPOSE_CACHE=DIR   cache directory instead of /var/cache/ournet/compose
#
# Always our own build of one version (not whatever `docker compose` the host has), so the e2e test
# that uses it is deterministic. Per-service `driver_opts` need compose v2.27.1 or later.
#
# `go install github.com/docker/compose/v2/cmd@VERSION` is refused (compose's go.mod has exclude
# directives), so the module is downloaded, copied out of the module cache and built as the main
# module. Takes about 2 minutes the first time; later runs are a cache hit. Progress goes to stderr,
# only the path to stdout. A lock keeps two runs from building at once; the binary is moved into place
# only when complete.
set -euo pipefail

export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

readonly COMPOSE_VERSION=v2.40.3
readonly COMPOSE_MODULE=github.com/docker/compose/v2
readonly CACHE_ROOT=${COMPOSE_CACHE:-/var/cache/ournet/compose}
readonly CACHE_DIR=$CACHE_ROOT/$COMPOSE_VERSION
readonly BIN=$CACHE_DIR/docker-compose

log() { echo "compose.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The binary reports its version; a half-written or foreign file does not count as a cache hit.
is_built() {
	[[ -x $BIN ]] && [[ $("$BIN" version --short 2>/dev/null) == "${COMPOSE_VERSION#v}" ]]
}

if is_built; then
	echo "$BIN"
	exit 0
fi

command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go); needed to build compose $COMPOSE_VERSION"
command -v flock >/dev/null || die "flock not found (package util-linux)"
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
flock 9
# Another run may have built it while we waited for the lock.
if is_built; then
	echo "$BIN"
	exit 0
fi

# Same filesystem as the cache, so the final mv is atomic.
work=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "building docker-compose $COMPOSE_VERSION into $BIN, takes about 2 minutes"
start=$SECONDS
# Outside any module and workspace: the download must not touch the repository's go.mod/go.sum.
export GOWORK=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local CGO_ENABLED=0
dir=$(cd "$work" && go mod download -json "$COMPOSE_MODULE@$COMPOSE_VERSION" |
	sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')
[[ -n $dir && -f $dir/go.mod ]] || die "go mod download $COMPOSE_MODULE@$COMPOSE_VERSION gave no module directory"
# The module cache is read-only; the build needs a writable copy of it as the main module.
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
# compose's Makefile stamps the version the same way; without it `version` prints "unknown".
(cd "$work/src" && go build -trimpath -ldflags "-s -w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION" \
	-o "$work/docker-compose" ./cmd)
got=$("$work/docker-compose" version --short) || die "the built binary does not run"
[[ $got == "${COMPOSE_VERSION#v}" ]] || die "the built binary reports version $got, want ${COMPOSE_VERSION#v}"
mkdir -p "$CACHE_DIR"
mv "$work/docker-compose" "$BIN"
log "built docker-compose $COMPOSE_VERSION in $((SECONDS - start))s"
echo "$BIN"
