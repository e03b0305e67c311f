#!/usr/bin/env bash
# Installs everything from scratch (Bun itself from the npm registry, pinned), builds dist/spool,
# and runs the quickstart job with the offline mock provider. Needs only Node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
BUN_VERSION=1.4.5
if [ "$(.tools/node_modules/.bin/bun --version 2>/dev/null)" != "$BUN_VERSION" ]; then
  npm install --no-save --no-audit --no-fund --loglevel=error --prefix .tools "bun@$BUN_VERSION" >&2
fi
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
bun install --frozen-lockfile >&2
bun run build >&2
if [ "${1:-}" != "--no-quickstart" ]; then
  home=$(mktemp -d)
  (cd examples/quickstart && ../../dist/spool run job.toml --home "$home" && ../../dist/spool results --home "$home")
  rm -rf "$home"
fi
