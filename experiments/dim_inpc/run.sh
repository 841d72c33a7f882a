#!/usr/bin/env bash
# DiM past INPC 10 on digits, scored on a validation split (20 training images per class held
# out; the test split is not read): the shipped digits config's fixed sets at INPC 1, 10, 20 and
# 50 beside random and herded real images, one evaluation seed.
# Run from the repository root: bash experiments/dim_inpc/run.sh
set -euo pipefail
gencond sweep dim --config configs/dim/digits.yaml --validation-per-class 20 \
  --inpc 1 10 20 50 --seeds 1 --work-dir ${WORK:-runs/dim_inpc} --reuse \
  --variant 'shipped config={}' \
  --json experiments/dim_inpc/sweep_digits.json
