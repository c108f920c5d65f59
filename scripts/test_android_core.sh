#!/usr/bin/env bash
# Compiles and tests the Android app's plain-Java core (android_demo/core) on the JVM, from a fresh
# clone, without the Android SDK or Gradle:
#   1. Debian's JDK and JUnit 4 (openjdk-17-jdk-headless, junit4), installed with apt-get when missing;
#   2. javac --release 8 of core/src/main (the API level the app's minSdk 26 has; nothing newer can
#      slip in), with mmedge/bundle/manifest.schema.json, mmedge/caption/caption_manifest.schema.json
#      and mmedge/adapt/vlm_manifest.schema.json copied onto the classpath as Gradle does;
#   3. the tests in core/src/test (JUnit 4, every *Test class) against the shared vectors in tests/vectors.
# Needs models/vqa-default/bundles/vqa-default-onnx.mmedge, tests/vectors/golden/, tests/vectors/caption/,
# tests/vectors/vlm/ and models/caption-default/model.safetensors (the caption bundle's weights are
# rebuilt from it).
#
#   scripts/test_android_core.sh            # build and run every test
#   scripts/test_android_core.sh --build    # build only (tests/test_android_core.py does this)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORE="$ROOT/android_demo/core"
OUT="$CORE/build/jvm"
JUNIT=/usr/share/java/junit4.jar
HAMCREST=/usr/share/java/hamcrest-core.jar

missing=()
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
[[ -f "$JUNIT" && -f "$HAMCREST" ]] || missing+=(junit4)
if (( ${#missing[@]} )); then
  echo "== installing ${missing[*]} (apt-get)"
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
echo "== $(javac -version 2>&1)"

rm -rf "$OUT"
mkdir -p "$OUT/main/dev/mmedge/core" "$OUT/test"
echo "== compiling android_demo/core (javac --release 8)"
find "$CORE/src/main/java" -name '*.java' > "$OUT/main-sources.txt"
javac --release 8 -encoding UTF-8 -Xlint:all,-serial -Werror -d "$OUT/main" @"$OUT/main-sources.txt"
cp "$ROOT/mmedge/bundle/manifest.schema.json" "$OUT/main/dev/mmedge/core/manifest.schema.json"
cp "$ROOT/mmedge/caption/caption_manifest.schema.json" "$OUT/main/dev/mmedge/core/caption_manifest.schema.json"
cp "$ROOT/mmedge/adapt/vlm_manifest.schema.json" "$OUT/main/dev/mmedge/core/vlm_manifest.schema.json"
find "$CORE/src/test/java" -name '*.java' > "$OUT/test-sources.txt"
javac -encoding UTF-8 -Xlint:all,-serial -cp "$OUT/main:$JUNIT" -d "$OUT/test" @"$OUT/test-sources.txt"
echo "$OUT/main:$OUT/test:$JUNIT:$HAMCREST" > "$OUT/classpath.txt"
if [[ "${1:-}" == "--build" ]]; then
  echo "== built into ${OUT#"$ROOT"/} (classpath in classpath.txt)"
  exit 0
fi

tests=$(cd "$CORE/src/test/java" && find . -name '*Test.java' | sed 's|^\./||; s|\.java$||; s|/|.|g' | sort)
echo "== JUnit: $(echo $tests | wc -w) test classes"
cd "$ROOT"
# shellcheck disable=SC2086
java -Dmmedge.repo="$ROOT" -cp "$(cat "$OUT/classpath.txt")" org.junit.runner.JUnitCore $tests
