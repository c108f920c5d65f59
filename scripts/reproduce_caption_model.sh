#!/usr/bin/env bash
# Retrain the shipped captioner from scratch, evaluate it, copy the run here and rewrite its card.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
mmedge train --task caption --config models/configs/caption-default.json --out runs/caption-default --force --no-progress
mkdir -p models/caption-default/training models/caption-default/eval
cp runs/caption-default/{config.json,model.safetensors,tokenizer.json} models/caption-default/
cp runs/caption-default/{train_config.json,metrics.jsonl} models/caption-default/training/
mmedge eval --model models/caption-default --split test --limit 1000 --json models/caption-default/eval/test.json --no-progress
python scripts/caption_card.py --minutes $(( ($(date +%s) - start) / 60 ))
