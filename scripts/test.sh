#!/usr/bin/env bash
# Every test suite: Python (pytest: real exports and runtimes on tiny models), the JavaScript runtime
# (Node's test runner against the golden vectors) and the web demo (headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q
bash scripts/test_js.sh
bash scripts/test_web.sh
