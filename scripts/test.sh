#!/usr/bin/env bash
# Every test suite: Python (pytest: real exports and runtimes on tiny models), the JavaScript runtime
# (Node's test runner against the golden vectors), the web demo (headless Chromium) and the Android
# app's plain-Java core (javac + JUnit on the JVM against the same vectors).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q --durations=25
bash scripts/test_js.sh
bash scripts/test_web.sh
bash scripts/test_android_core.sh
