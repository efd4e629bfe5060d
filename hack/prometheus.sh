#!/usr/bin/env bash
# Prints the path of Debian's prometheus server binary, installing the package first if
# needed (apt-get; it is not started by the install). Used by tests of the Prometheus source.
set -euo pipefail
if ! command -v prometheus >/dev/null; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "[prometheus] installing Debian's prometheus" >&2
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! $SUDO apt-get install -y -qq --no-install-recommends prometheus >"$log" 2>&1; then
    $SUDO apt-get update -qq >>"$log" 2>&1 || true
    $SUDO apt-get install -y -qq --no-install-recommends prometheus >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  fi
  rm -f "$log"
fi
command -v prometheus
