#!/usr/bin/env bash
# Benchmarks: the IPAM allocator for now.
set -euo pipefail
export PATH="/usr/local/go/bin:${PATH:-/usr/bin:/bin}"
cd "$(dirname "$0")/.."
go test -run=XXX -bench=. ./ipam/...
