#!/usr/bin/env bash
# Installs everything from scratch (Bun itself from the npm registry, pinned), builds dist/spool,
# runs the quickstart job with the offline mock provider, and ends with the line that puts `spool` on the PATH.
# Needs only Node and npm.
set -euo pipefail
caller=$PWD
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
# the last word: how to get `spool` on the PATH (setup installs nothing outside this folder itself)
bin=dist/spool
[ "$caller" = "$PWD" ] || bin=$(printf '%q' "$PWD/dist/spool")
cat >&2 <<EOF

dist/spool is built: one file, nothing else needed. Put it on your PATH as \`spool\` (the README's examples say \`spool\`):
  mkdir -p ~/.local/bin && install -m 755 $bin ~/.local/bin/spool
EOF
