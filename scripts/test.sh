#!/usr/bin/env bash
# Runs the whole test suite against a fresh build of dist/spool; the last line is "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-quickstart || exit 1
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
mkdir -p test/artifacts
rm -f test/artifacts/junit.xml
bun test --timeout 60000 --reporter=junit --reporter-outfile=test/artifacts/junit.xml "$@"
code=$?
bun scripts/totals.ts test/artifacts/junit.xml || code=1
exit $code
