#!/usr/bin/env bash
# Rebuild models/vqa-default from scratch: train, copy the model, evaluate, write the card.
# About 60 minutes on the 2-core CPU machine; run it in the background with a log:
#   nohup bash scripts/reproduce_default_model.sh > runs/reproduce.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/vqa-default}
OUT=models/vqa-default
TRAIN="mmedge train --task vqa --config models/configs/vqa-default.json --out $RUN --force --no-progress"
$TRAIN
rm -rf "$OUT/training"
mkdir -p "$OUT/eval" "$OUT/training/vqa-default"
for f in config.json model.safetensors tokenizer.json; do cp "$RUN/$f" "$OUT/$f"; done
cp "$RUN/train_config.json" "$RUN/metrics.jsonl" "$OUT/training/vqa-default/"
EVAL_TEST="mmedge eval --model $OUT --split test --limit 2000 --json $OUT/eval/test.json --no-progress"
EVAL_COMP="mmedge eval --model $OUT --split compositional --limit 1000 --json $OUT/eval/compositional.json --no-progress"
$EVAL_TEST
$EVAL_COMP
python3 scripts/model_card.py "$OUT" --train-commands "$TRAIN" --eval-commands "$EVAL_TEST" "$EVAL_COMP"
