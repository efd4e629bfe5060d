#!/usr/bin/env bash
# Runs the whole test suite (`npm test`) once per Kubernetes version, each on a control
# plane of its own (state in .cluster-<minor>/, ports, pod and service networks of its own,
# so a control plane you keep up with the defaults is not disturbed), one after the other. Ends with the
# totals over all versions: "N passed, N failed".
#
#   npm run test:matrix                         the oldest supported and the default version
#   GOVERNOR_K8S_VERSIONS="1.35 1.36" npm run test:matrix
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERSIONS=(${GOVERNOR_K8S_VERSIONS:-1.34 1.37})

total_passed=0
total_failed=0
summary=()
for v in "${VERSIONS[@]}"; do
  minor=${v#*.}
  minor=${minor%%.*}
  log="$ROOT/.cluster-$v.test.log"
  echo "===== Kubernetes $v (log: $log)"
  set +e
  GOVERNOR_K8S_VERSION=$v GOVERNOR_CLUSTER_DIR="$ROOT/.cluster-$v" \
    GOVERNOR_ETCD_PORT=$((23700 + 2 * minor)) GOVERNOR_APISERVER_PORT=$((6400 + minor)) \
    GOVERNOR_KCM_PORT=$((11000 + minor)) GOVERNOR_SCHEDULER_PORT=$((11100 + minor)) \
    GOVERNOR_POD_CIDR="10.2$minor.0.0/16" GOVERNOR_SERVICE_CIDR="10.96.$minor.0/24" \
    GOVERNOR_NODE_AGENT_PREFIX="g$minor" \
    npm test 2>&1 | tee "$log"
  set -e
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)
  if [[ -z $line ]]; then
    summary+=("Kubernetes $v: the run ended without a result line")
    total_failed=$((total_failed + 1))
    continue
  fi
  read -r p _ f _ <<<"$line"
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
  summary+=("Kubernetes $v: $line")
done
echo
printf '%s\n' "${summary[@]}"
echo "$total_passed passed, $total_failed failed"
((total_failed == 0))
