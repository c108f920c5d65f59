#!/usr/bin/env bash
# Every test suite: Python (pytest: real exports and runtimes on tiny models), the JavaScript runtime
# (Node's test runner against the golden vectors), the web demo (headless Chromium) and the Android
# app's plain-Java core (javac + JUnit on the JVM against the same vectors), then the documentation
# site's strict build (mkdocs.yml: a broken link, a missing page or reference fails it).
set -euo pipefail
cd "$(dirname "$0")/.."
# Two workers, a test file each at a time (module fixtures built once per file): the suite is ~14
# minutes on two cores instead of ~21 in one process. pytest-benchmark, when present, is not ours.
python3 -m pytest -q -n 2 --dist loadfile -p no:benchmark --durations=25
NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true python3 -m mkdocs build --strict --site-dir site
bash scripts/test_js.sh
bash scripts/test_web.sh
bash scripts/test_android_core.sh
