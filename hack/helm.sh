#!/usr/bin/env bash
# Prints the path of a helm binary, building it first if needed from the published Go
# module `helm.sh/helm/v4` (cmd/helm; that module has no `replace` lines, so `go install
# …@version` builds it). Cached per version outside the work tree. Used by the chart tests.
#
#   GOVERNOR_HELM_VERSION   module version; default v4.3.1
#   GOVERNOR_CACHE          cache root; default ~/.cache/governor
set -euo pipefail
VERSION="${GOVERNOR_HELM_VERSION:-v4.3.1}"
[[ $VERSION =~ ^v4\.[0-9]+\.[0-9]+$ ]] || {
  echo "[helm] version must look like v4.3.1, not '$VERSION'" >&2
  exit 2
}
CACHE_ROOT="${GOVERNOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/governor}"
BIN="$CACHE_ROOT/helm-$VERSION/bin"

if [[ ! -x $BIN/helm ]]; then
  command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || {
    echo "[helm] Go is required to build helm $VERSION" >&2
    exit 1
  }
  echo "[helm] building helm $VERSION from helm.sh/helm/v4 (a few minutes the first time)" >&2
  start=$SECONDS
  mkdir -p "$BIN"
  GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$VERSION" \
    "helm.sh/helm/v4/cmd/helm@$VERSION" >&2
  echo "[helm] built in $((SECONDS - start)) s; cached in $BIN" >&2
fi
echo "$BIN/helm"
