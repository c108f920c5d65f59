#!/usr/bin/env bash
# A side venv for benchmarks/optimum_int8.py (issue #18). optimum-onnx 0.1.0 pins transformers<4.58
# (so older huggingface_hub and tokenizers than mmedge's own environment has): it lives in its own
# venv, which still sees this environment's torch, onnx, onnxruntime and mmedge (--system-site-packages).
#   bash scripts/setup_optimum_venv.sh [VENV]   # default $MMEDGE_OPTIMUM_VENV or ~/.venvs/mmedge-optimum
set -euo pipefail
VENV="${1:-${MMEDGE_OPTIMUM_VENV:-$HOME/.venvs/mmedge-optimum}}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "optimum-onnx==0.1.0"
(cd / && "$VENV/bin/python" -c "import optimum.onnxruntime, onnxruntime, torch; print('optimum venv ready:', '$VENV')")
