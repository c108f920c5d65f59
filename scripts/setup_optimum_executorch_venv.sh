#!/usr/bin/env bash
# A side venv for benchmarks/vlm_scale.py's optimum-executorch probe (issue #29). optimum-executorch 1.1.0 pins
# transformers==5.0.0rc1 (mmedge pins another): it lives in its own venv, which still sees this environment's
# torch, executorch and torchao (--system-site-packages).
#   bash scripts/setup_optimum_executorch_venv.sh [VENV]   # default $MMEDGE_OPTIMUM_ET_VENV or ~/.venvs/mmedge-optimum-et
set -euo pipefail
VENV="${1:-${MMEDGE_OPTIMUM_ET_VENV:-$HOME/.venvs/mmedge-optimum-et}}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "optimum-executorch==1.1.0"
(cd / && "$VENV/bin/python" -c "import optimum.exporters.executorch, executorch, torch; print('optimum-executorch venv ready:', '$VENV')")
