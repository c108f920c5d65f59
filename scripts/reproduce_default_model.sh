#!/usr/bin/env bash
# Rebuild models/vqa-default from scratch: three training stages, copy the model, evaluate,
# write the card. About an hour on the 2-core CPU machine; run it in the background with a log:
#   nohup bash scripts/reproduce_default_model.sh > runs/reproduce.log 2>&1 &
# Stage 1 trains everything; stages a and b are a curriculum for spatial relations (left/above
# only, then all four), each initialised from the stage before (see the model card).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
OUT=models/vqa-default
S1="mmedge train --task vqa --config models/configs/vqa-default.json --out $RUNS/vqa-default --force --no-progress"
S2="mmedge train --task vqa --config models/configs/vqa-default-relations-a.json --init-from $RUNS/vqa-default --out $RUNS/vqa-default-a --force --no-progress"
S3="mmedge train --task vqa --config models/configs/vqa-default-relations-b.json --init-from $RUNS/vqa-default-a --out $RUNS/vqa-default-b --force --no-progress"
$S1
$S2
$S3
rm -rf "$OUT/training"
mkdir -p "$OUT/eval" "$OUT/training"
for f in config.json model.safetensors tokenizer.json; do cp "$RUNS/vqa-default-b/$f" "$OUT/$f"; done
for stage in vqa-default vqa-default-a vqa-default-b; do
  mkdir -p "$OUT/training/$stage"
  cp "$RUNS/$stage/train_config.json" "$RUNS/$stage/metrics.jsonl" "$OUT/training/$stage/"
done
EVAL_TEST="mmedge eval --model $OUT --split test --limit 2000 --json $OUT/eval/test.json --no-progress"
EVAL_COMP="mmedge eval --model $OUT --split compositional --limit 1000 --json $OUT/eval/compositional.json --no-progress"
$EVAL_TEST
$EVAL_COMP
python3 scripts/model_card.py "$OUT" --train-commands "$S1" "$S2" "$S3" --eval-commands "$EVAL_TEST" "$EVAL_COMP"
