#!/usr/bin/env bash
# Rebuild the bundled models from ../shared/corpus (network) and ../shared/corpus + ../shared/unseen
# (learned parts: CLIP head, fusion, calibration, tiers, OOD guard), exactly as shipped (see data/models/MODEL_CARD.md).
# Takes about two hours on 2 CPU cores; uses CUDA when present. Intermediate files go to ${RUNS:-runs/}.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/corpus}
UNSEEN=${UNSEEN:-../shared/unseen}
CACHE=${CACHE:-.cache/features}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS" data/models
python -m core bias-report --data "$CORPUS/train" | tee "$RUNS/bias-report.txt"
# A linear patch teacher on local residual statistics (9×9 windows at stride 8, LaDeDa9's geometry) ...
python -m core fit-teacher --data "$CORPUS" --out "$RUNS/patch_teacher.pt" --max-side 768
# ... whose patch logits LaDeDa9 regresses next to the BCE, at native resolution (≤768 px, no resize).
python -m core train --data "$CORPUS" --out "$RUNS/ladeda9_fp32.pt" --arch ladeda9 --input-repr NPR \
  --resize-mode none --max-side 768 --crop 64 --crop-align 8 --val-crop 256 \
  --patch-teacher "$RUNS/patch_teacher.pt" --teacher-weight 0.1 --batch-size 32 --steps "${STEPS:-2700}" \
  --steps-per-epoch 150 --lr 2e-4 --warmup-steps 100 --zero-init --lr-patience 4 --early-stop-patience 6 \
  --no-bias-report --resume
python -m core convert --model "$RUNS/ladeda9_fp32.pt" --out "$RUNS/ladeda9_fp16.pt" --dtype float16
python -m core calibrate --model "$RUNS/ladeda9_fp16.pt" --data "$CORPUS/val" --method platt \
  --target-fpr 0.05 --target-fnr 0.20 --out data/models/ladeda9.pt
python -m core distill --teacher data/models/ladeda9.pt --data "$CORPUS" --out "$RUNS/tiny_raw.pt" \
  --crop 128 --crops-per-image 4 --epochs 8
python -m core calibrate --model "$RUNS/tiny_raw.pt" --data "$CORPUS/val" --method platt \
  --target-fpr 0.05 --target-fnr 0.20 --out data/models/tiny_ladeda.pt
python -m core evaluate --model data/models/ladeda9.pt --data "$CORPUS/test" --robustness --report "$RUNS/eval-ladeda9"
python -m core evaluate --model data/models/tiny_ladeda.pt --data "$CORPUS/test" --robustness --report "$RUNS/eval-tiny"
# The learned parts on the train + val images of all nine sources (features cached per image in $CACHE;
# the CLIP features depend on the CPU's INT8 kernels: see the model card), then the figures of the card.
python -m core.learning.bundle --corpus "$CORPUS" --unseen "$UNSEEN" --cache "$CACHE" --model data/models/ladeda9.pt
python benchmarks/unseen_sources.py --corpus "$CORPUS" --unseen "$UNSEEN" --cache "$CACHE" --eval both \
  | tee "$RUNS/unseen-sources.txt"
