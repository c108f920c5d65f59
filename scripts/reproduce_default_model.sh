#!/usr/bin/env bash
# Rebuild models/vqa-default from scratch: train (two stages), copy the model, evaluate, write the card.
# About 80 minutes on the 2-core CPU machine; run it in the background with a log:
#   nohup bash scripts/reproduce_default_model.sh > runs/reproduce.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/vqa-default}
RUN2=${RUN2:-runs/vqa-default-stage2}
OUT=models/vqa-default
# Stage 1: every question type, spatial questions drawn 3x as often, token tagging + phrase grounding.
TRAIN1="mmedge train --task vqa --config models/configs/vqa-default.json --out $RUN --force --no-progress"
# Stage 2: half the learning rate, compare (3x) and spatial (2x) drawn more often, grounding also predicts size.
TRAIN2="mmedge train --task vqa --config models/configs/vqa-default-stage2.json --init-from $RUN --out $RUN2 --force --no-progress"
$TRAIN1
$TRAIN2
rm -rf "$OUT/training"
mkdir -p "$OUT/eval" "$OUT/training/1-vqa-default" "$OUT/training/2-compare-spatial-size"
for f in config.json model.safetensors tokenizer.json; do cp "$RUN2/$f" "$OUT/$f"; done
cp "$RUN/train_config.json" "$RUN/metrics.jsonl" "$OUT/training/1-vqa-default/"
cp "$RUN2/train_config.json" "$RUN2/metrics.jsonl" "$OUT/training/2-compare-spatial-size/"
EVAL_TEST="mmedge eval --model $OUT --split test --limit 2000 --json $OUT/eval/test.json --no-progress"
EVAL_COMP="mmedge eval --model $OUT --split compositional --limit 1000 --json $OUT/eval/compositional.json --no-progress"
$EVAL_TEST
$EVAL_COMP
python3 scripts/model_card.py "$OUT" --train-commands "$TRAIN1" "$TRAIN2" --eval-commands "$EVAL_TEST" "$EVAL_COMP"
