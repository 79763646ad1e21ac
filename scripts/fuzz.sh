#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (go test fuzzes one target at a time).
set -euo pipefail
export PATH="/usr/local/go/bin:${PATH:-/usr/bin:/bin}"
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}

# `go test -list` prints each package's matching names, then "ok <package> <time>".
if ! listing=$(go test -list '^Fuzz' ./... 2>&1); then
	echo "$listing" >&2
	exit 1
fi
targets=()
names=()
while read -r first second _; do
	case "$first" in
	Fuzz*) names+=("$first") ;;
	ok)
		for name in "${names[@]}"; do targets+=("$second $name"); done
		names=()
		;;
	*) names=() ;;
	esac
done <<<"$listing"

if ((${#targets[@]} == 0)); then
	echo "fuzz.sh: no fuzz targets found"
	exit 0
fi
for target in "${targets[@]}"; do
	read -r package name <<<"$target"
	echo "fuzz.sh: $package $name for $fuzztime"
	go test -run='^$' -fuzz="^$name\$" -fuzztime="$fuzztime" "$package"
done
