#!/usr/bin/env bash
# Does the paper's generator pretraining help the codebook, at equal total time? The shipped
# MNIST-subset config (no pretraining, 6 epochs), the same after one epoch of pretraining
# (pretrain_epochs: 1, DiM's AC-WGAN-GP on the real images; about 8 condensation epochs'
# time; measured: 235 s of pretraining against 28 s per condensation epoch), and the shipped
# config given that time as condensation epochs (14 epochs).
# Scored on 50 training images per class held out (the test split is not read). The shipped
# variant is reused from experiments/codebook_beyond_k/run.sh when WORK is shared.
# Run from the repository root: bash experiments/codebook_pretrain/run.sh
set -euo pipefail
gencond sweep codebook --config configs/codebook/mnist_subset.yaml --validation-per-class 50 \
  --inpc 1 10 --seeds 2 --work-dir ${WORK:-runs/codebook_beyond_k} --reuse \
  --variant 'K 10 (shipped)={}' \
  --variant 'pretraining 1 epoch, then 6 epochs={pretrain_epochs: 1}' \
  --variant 'no pretraining, 14 epochs (equal time)={epochs: 14}' \
  --json experiments/codebook_pretrain/sweep_mnist_subset.json
