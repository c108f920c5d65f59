#!/usr/bin/env bash
# Install and test the JavaScript runtime (runtimes/js) on a fresh clone: needs Node 20+ and npm,
# and network access to the npm registry for the first install.
set -euo pipefail
cd "$(dirname "$0")/../runtimes/js"
node -e 'const [major] = process.versions.node.split(".").map(Number); if (major < 20) { console.error(`Node ${process.versions.node}: the JS runtime needs Node 20 or newer`); process.exit(1); }'
# onnxruntime-node ships its CPU binaries; skip its optional download of GPU libraries.
export ONNXRUNTIME_NODE_INSTALL=skip
npm ci --no-audit --no-fund --prefer-offline
npm test
