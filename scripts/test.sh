#!/usr/bin/env bash
# Runs the whole test suite against a fresh build of dist/spool; the last line is "N passed, N failed".
# The spec conformance checks need the OpenAPI specs: SPOOL_SPECS=DIR, or ../shared/specs (README.md, Testing).
set -uo pipefail
# a relative SPOOL_SPECS is meant from where this was started
[ -n "${SPOOL_SPECS:-}" ] && [ "${SPOOL_SPECS#/}" = "$SPOOL_SPECS" ] && export SPOOL_SPECS="$PWD/$SPOOL_SPECS"
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-quickstart || exit 1
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
mkdir -p test/artifacts
rm -f test/artifacts/junit.xml
bun test --timeout 60000 --reporter=junit --reporter-outfile=test/artifacts/junit.xml "$@"
code=$?
bun scripts/totals.ts test/artifacts/junit.xml || code=1
exit $code
