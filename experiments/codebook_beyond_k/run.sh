#!/usr/bin/env bash
# How should the codebook serve INPC beyond 10? The shipped MNIST-subset config (K = 10, codes
# beyond K drawn around the learned ones) against a K = 50 nested codebook whose steps see 10
# codes per class (codes_per_step), its prefix drawn log-uniformly. Scored on
# 50 training images per class held out (the test split is not read), INPC 1 to 50, one
# evaluation seed (an INPC-50 network takes about 5 minutes on 2 CPU cores).
# Run from the repository root: bash experiments/codebook_beyond_k/run.sh
set -euo pipefail
gencond sweep codebook --config configs/codebook/mnist_subset.yaml --validation-per-class 50 \
  --inpc 1 2 5 10 20 50 --seeds 1 --work-dir ${WORK:-runs/codebook_beyond_k} --reuse \
  --variant 'K 10 (shipped)={}' \
  --variant 'K 50, 10 codes per step, log prefix={codebook_size: 50, codes_per_step: 10, nested_prefixes: log}' \
  --json experiments/codebook_beyond_k/sweep_mnist_subset.json
