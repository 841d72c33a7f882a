#!/usr/bin/env bash
# DiM's pool and matching choices on digits, scored on a validation split (20 training images
# per class held out; the test split is not read): the shipped one-network pool (ConvNet-3)
# against the paper's pool of three and the official code's pool of five (with the
# average-pool ResNets), and the `features` and `gradients` matching options end to end.
# Run from the repository root: bash experiments/dim_pool/run.sh
set -euo pipefail
gencond sweep dim --config configs/dim/digits.yaml --validation-per-class 20 \
  --inpc 1 10 --seeds 2 --work-dir ${WORK:-runs/dim_pool} --reuse \
  --variant 'ConvNet-3 pool (shipped)={}' \
  --variant 'paper pool (C-3, R-10, R-18)={pool: [convnet3, resnet10_cifar, resnet18_cifar]}' \
  --variant 'official pool (+ R-10-AP, R-18-AP)={pool: [convnet3, resnet10_cifar, resnet18_cifar, resnet10_ap, resnet18_ap]}' \
  --variant 'features matching={match: features}' \
  --variant 'gradients matching={match: gradients}' \
  --json experiments/dim_pool/sweep_digits.json
