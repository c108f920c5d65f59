#!/usr/bin/env bash
# Every test suite: Python (pytest: real exports and runtimes on tiny models), the JavaScript runtime
# (Node's test runner against the golden vectors), the web demo (headless Chromium) and the Android
# app's plain-Java core (javac + JUnit on the JVM against the same vectors), then the documentation
# site's strict build (mkdocs.yml: a broken link, a missing page or reference fails it).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q --durations=25
NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true python3 -m mkdocs build --strict --site-dir site
bash scripts/test_js.sh
bash scripts/test_web.sh
bash scripts/test_android_core.sh
