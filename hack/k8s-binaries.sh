#!/usr/bin/env bash
# Make sure kube-apiserver and kube-controller-manager (Kubernetes 1.20.2, built from
# Debian's `kubernetes` source package) and etcd are available, and print the directory
# holding the two Kubernetes binaries. Builds once and caches outside the work tree;
# later calls take milliseconds. See docs/adr/0002-local-control-plane.md for why.
#
# --with-sample-apiserver also builds the Go `sample-apiserver` from the same source tree
# (about a minute more): the Go aggregated API server `npm run bench` compares with.
set -euo pipefail

K8S_VERSION=1.20.2
CACHE_ROOT="${GOVERNOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/governor}"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION/bin"
log() { echo "[k8s-binaries] $*" >&2; }

BINARIES=(kube-apiserver kube-controller-manager)
TARGETS=(cmd/kube-apiserver cmd/kube-controller-manager)
if [[ ${1:-} == --with-sample-apiserver ]]; then
  BINARIES+=(sample-apiserver)
  TARGETS+=(vendor/k8s.io/sample-apiserver)
fi
all_built() {
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

if all_built && command -v etcd >/dev/null; then
  echo "$BIN_DIR"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

SRC_LIST=/etc/apt/sources.list.d/governor-deb-src.sources
if [[ ! -f $SRC_LIST ]]; then
  log "adding a deb-src entry for bookworm main ($SRC_LIST)"
  $SUDO tee "$SRC_LIST" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
log "apt-get update"
$SUDO apt-get update -qq >&2 || log "apt-get update reported errors (continuing: only Debian's archive is needed)"
apt_install etcd-server golang-go rsync jq openssl dpkg-dev make \
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev

if all_built; then
  echo "$BIN_DIR"
  exit 0
fi

WORK="$CACHE_ROOT/build"
TREE="$WORK/src"
# The unpacked, patched tree is kept after a build, so a later --with-sample-apiserver
# only compiles; without it (or half-made), start over.
if [[ ! -f "$TREE/.governor-patched" ]]; then
  rm -rf "$WORK"
  mkdir -p "$WORK"
  cd "$WORK"
  log "downloading Debian's kubernetes source package"
  apt-get source --download-only kubernetes >&2
  log "unpacking (about 30 s)"
  dpkg-source --no-check -x kubernetes_*.dsc src >/dev/null

  log "replacing vendored reflect2 and json-iterator with Debian's (Go 1.19 crash fix)"
  for pair in "github.com/modern-go/reflect2" "github.com/json-iterator/go"; do
    dst="$TREE/vendor/$pair"
    src="/usr/share/gocode/src/$pair"
    find "$dst" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
    find "$src" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$dst/" \;
  done
  touch "$TREE/.governor-patched"
fi

log "building ${BINARIES[*]} (a few minutes on 2 cores the first time)"
mkdir -p "$WORK/.go/src/k8s.io"
ln -sfn "$TREE" "$WORK/.go/src/k8s.io/kubernetes"
(
  cd "$WORK/.go/src/k8s.io/kubernetes"
  export GOPATH="$WORK/.go" CGO_ENABLED=0 GOFLAGS=-mod=vendor GO111MODULE=on GOCACHE="$WORK/.gocache"
  export KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean
  make WHAT="${TARGETS[*]}" >&2
)
mkdir -p "$BIN_DIR"
for b in "${BINARIES[@]}"; do
  # Copy then rename: a running binary (the control plane is up) cannot be overwritten.
  cp "$TREE/_output/local/bin/linux/amd64/$b" "$BIN_DIR/.$b.new"
  mv -f "$BIN_DIR/.$b.new" "$BIN_DIR/$b"
done
log "cached in $BIN_DIR"
echo "$BIN_DIR"
