#!/usr/bin/env bash
# Tests the web demo (web_demo/) in headless Chromium, from a fresh clone:
#   1. Debian's chromium, installed with apt-get when missing (playwright's browser download is
#      never used: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1);
#   2. the JavaScript runtime built into runtimes/js/dist (`npm ci` first when it has no
#      node_modules, with ONNXRUNTIME_NODE_INSTALL=skip: the page uses onnxruntime-web, not -node);
#   3. `npm ci` in web_demo, then `npm test` there (builds vendor/ajv2020.js, then node --test test/).
# Needs the bundle models/vqa-default/bundles/vqa-default-onnx.mmedge and tests/vectors/golden/; the
# captioning mode's tests need tests/vectors/caption/ and models/caption-default/model.safetensors
# (web_demo's build rebuilds the caption bundle's weights from it).
#
#   scripts/test_web.sh            # as root, or with chromium already installed
#   CHROMIUM_PATH=/path/to/chromium scripts/test_web.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [[ -z "${CHROMIUM_PATH:-}" ]]; then
  if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (apt-get)"
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends chromium
  fi
  CHROMIUM_PATH="$(command -v chromium)"
  export CHROMIUM_PATH
fi
echo "== browser: $("$CHROMIUM_PATH" --version 2>/dev/null | head -n 1)"

echo "== runtime: runtimes/js"
if [[ ! -d "$ROOT/runtimes/js/node_modules" ]]; then
  (cd "$ROOT/runtimes/js" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund)
fi
(cd "$ROOT/runtimes/js" && npm run build)

echo "== web_demo: npm ci"
(cd "$ROOT/web_demo" && npm ci --no-audit --no-fund)

echo "== web_demo: npm test"
cd "$ROOT/web_demo"
npm test
