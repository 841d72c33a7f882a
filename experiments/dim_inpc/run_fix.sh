#!/usr/bin/env bash
# What the DiM INPC sweep shows (accuracy falling past INPC 10) against two serving options, on the
# same validation split (20 training images per class held out; the test split is not read) and
# the generator the sweep trained on the carved training split: plain fixed sets, candidate
# selection by a real-data network's confidence (4 x INPC drawn, INPC kept), and a teacher's soft
# labels; random real images with hard and soft labels beside them. Run after run.sh.
# Run from the repository root: bash experiments/dim_inpc/run_fix.sh
set -euo pipefail
WORK=${WORK:-runs/dim_inpc}
G=$WORK/shipped_config/generator
gencond bench --dataset digits --validation-per-class 20 --score-on validation \
  --sets "DiM=generator:$G" "DiM, confidence 4x=generator:$G?candidates=4&rule=confidence" \
  "DiM, soft labels=generator:$G?labels=soft" "random?labels=soft" \
  --inpc 10 50 --protocol fixed --arch convnet3 --augment dsa --seeds 2 --no-full-data --no-fidelity --workers 2 \
  --output-dir $WORK/bench_fix
cp $WORK/bench_fix/results.json experiments/dim_inpc/bench_fix_digits.json
