#!/usr/bin/env bash
# Prints the path of the bench's load generator (bench/loadgen/, Go, standard library
# only), building it first when its source changed. Cached outside the work tree, keyed by
# a hash of the source, like the other Go programs the bench runs. Used by `npm run bench`.
#
#   GOVERNOR_CACHE   cache root; default ~/.cache/governor
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../bench/loadgen"
CACHE_ROOT="${GOVERNOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/governor}"
HASH=$(cat go.mod ./*.go | sha256sum | cut -c1-12)
BIN="$CACHE_ROOT/loadgen-$HASH/loadgen"
if [[ ! -x $BIN ]]; then
  command -v go >/dev/null || {
    echo "[loadgen] Go is required to build the bench's load generator" >&2
    exit 1
  }
  echo "[loadgen] building bench/loadgen" >&2
  mkdir -p "$(dirname "$BIN")"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN.new" .
  mv -f "$BIN.new" "$BIN"
fi
echo "$BIN"
