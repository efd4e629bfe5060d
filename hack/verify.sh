#!/usr/bin/env bash
# Everything a change must pass besides the tests: types, lint, format, and generated
# files up to date (regenerate, then fail on any difference).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== typecheck"
npx tsc -p tsconfig.json --noEmit
echo "== lint"
npx eslint .
echo "== format"
npx prettier --check . >/dev/null || { npx prettier --list-different .; echo "run: npm run format" >&2; exit 1; }
echo "== figures (docs' tables from their kept raw figures)"
npx tsx hack/figures.ts --check
echo "== generated files"
bash hack/otlp-schema.sh --check
npm run --silent generate >/dev/null
if ! git diff --exit-code --stat -- crds docs config charts; then
  echo "generated files are out of date: run 'npm run generate' and commit the result" >&2
  exit 1
fi
untracked=$(git ls-files --others --exclude-standard -- crds docs config charts)
if [[ -n $untracked ]]; then
  echo "generated files not committed: $untracked" >&2
  exit 1
fi
echo "== build"
npm run --silent build
echo "verify: ok"
