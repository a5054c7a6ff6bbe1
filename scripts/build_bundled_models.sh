#!/usr/bin/env bash
# Rebuild the bundled models from ../shared/corpus, exactly as shipped (see data/models/MODEL_CARD.md).
# Takes about an hour on 2 CPU cores; uses CUDA when present. Intermediate files go to ${RUNS:-runs/}.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/corpus}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS" data/models
python -m core bias-report --data "$CORPUS/train" | tee "$RUNS/bias-report.txt"
python -m core train --data "$CORPUS" --out "$RUNS/ladeda9_fp32.pt" --arch ladeda9 --input-repr NPR --size 256 \
  --crop 64 --batch-size 32 --steps "${STEPS:-1400}" --steps-per-epoch 40 --lr 5e-4 --warmup-steps 40 \
  --lr-patience 4 --early-stop-patience 10 --no-bias-report --resume
python -m core convert --model "$RUNS/ladeda9_fp32.pt" --out "$RUNS/ladeda9_fp16.pt" --dtype float16
python -m core calibrate --model "$RUNS/ladeda9_fp16.pt" --data "$CORPUS/val" --method temperature \
  --target-fpr 0.05 --target-fnr 0.20 --out data/models/ladeda9.pt
python -m core distill --teacher data/models/ladeda9.pt --data "$CORPUS" --out "$RUNS/tiny_raw.pt" --epochs 6 --max-train-images 160
python -m core calibrate --model "$RUNS/tiny_raw.pt" --data "$CORPUS/val" --method temperature \
  --target-fpr 0.05 --target-fnr 0.20 --out data/models/tiny_ladeda.pt
python -m core evaluate --model data/models/ladeda9.pt --data "$CORPUS/test" --robustness --report "$RUNS/eval-ladeda9"
python -m core evaluate --model data/models/tiny_ladeda.pt --data "$CORPUS/test" --robustness --report "$RUNS/eval-tiny"
