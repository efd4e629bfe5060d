#!/usr/bin/env bash
# The unit and integration suites on Node.js 24 (what the Dockerfile's image runs), with
# the same dependencies as the machine's Node: node 24 goes first on PATH, so mocha, tsx
# and every process a test starts run on it. Ends with mocha's "N passed, N failed".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
node24=$(bash hack/node24.sh)
export PATH="$(dirname "$node24"):$PATH"
echo "[node24] $(node --version) from $node24" >&2
exec npx mocha "src/**/*.test.ts" "bench/**/*.test.ts" "test/support/**/*.test.ts" "test/integration/**/*.test.ts" "test/config/**/*.test.ts"
