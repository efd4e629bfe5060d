#!/usr/bin/env bash
# Prints the path of a Prometheus 3 server binary (or, with the argument `promtool`, of
# promtool), building it first if needed from the
# published Go module `github.com/prometheus/prometheus` (cmd/prometheus; that module has
# no `replace` lines, so `go install …@version` builds it). Cached per version outside
# the work tree. Used by the Prometheus-source tests, `npm run bench`, and the tests of
# config/prometheus (promtool).
#
#   GOVERNOR_PROMETHEUS_MODULE_VERSION   module version; default v0.316.0 (Prometheus 3.16.0)
#   GOVERNOR_CACHE                       cache root; default ~/.cache/governor
#
# The web UI's assets are not embedded (no `builtinassets` tag): the API is all we use.
set -euo pipefail
PROGRAM="${1:-prometheus}"
[[ $PROGRAM == prometheus || $PROGRAM == promtool ]] || {
  echo "[prometheus] usage: hack/prometheus.sh [prometheus|promtool]" >&2
  exit 2
}
MODULE_VERSION="${GOVERNOR_PROMETHEUS_MODULE_VERSION:-v0.316.0}"
[[ $MODULE_VERSION =~ ^v0\.([0-9]+)\.([0-9]+)$ ]] || {
  echo "[prometheus] module version must look like v0.316.0, not '$MODULE_VERSION'" >&2
  exit 2
}
# Prometheus 3.X.Y is published as module version v0.3XX.Y.
RELEASE="3.$((BASH_REMATCH[1] - 300)).${BASH_REMATCH[2]}"
CACHE_ROOT="${GOVERNOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/governor}"
BIN="$CACHE_ROOT/prometheus-$RELEASE/bin"

if [[ ! -x $BIN/$PROGRAM ]]; then
  command -v go >/dev/null || {
    echo "[prometheus] Go is required to build Prometheus $RELEASE" >&2
    exit 1
  }
  echo "[prometheus] building $PROGRAM $RELEASE from github.com/prometheus/prometheus@$MODULE_VERSION (a few minutes the first time)" >&2
  start=$SECONDS
  V=github.com/prometheus/common/version
  mkdir -p "$BIN"
  GOBIN="$BIN" CGO_ENABLED=0 go install \
    -ldflags "-s -w -X $V.Version=$RELEASE -X $V.Branch=release -X $V.Revision=$MODULE_VERSION" \
    "github.com/prometheus/prometheus/cmd/$PROGRAM@$MODULE_VERSION" >&2
  echo "[prometheus] built in $((SECONDS - start)) s; cached in $BIN" >&2
fi
echo "$BIN/$PROGRAM"
