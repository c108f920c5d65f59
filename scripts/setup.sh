#!/usr/bin/env bash
# Install mmedge with its training, export, test and docs extras on a fresh machine.
# torch comes first, pinned to the CPU wheel that lies on disk here: a bare `torch`
# requirement resolved from the index would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python3 -m pip install --quiet --disable-pip-version-check -e ".[train,export,test,docs]"
