#!/usr/bin/env bash
# The MNIST-subset leaderboard (../shared/data: 17,435 training / 10,000 test images): every
# method's fixed sets under one recipe, with DD-Ranking's scores. The generators are trained by
# the shipped subset configs (their default output folders under runs/; the same seed retrains
# them bit for bit on this machine type), DM is condensed by its shipped subset config at each
# IPC the stage holds, and one `gencond bench` measures every set.
#
# The grid is more than one session on 2 cores, so it runs in stages (INPC="1 10" bash ...) and
# its cell caches and DM's sets live in this folder, in git: a later stage trains only the cells
# the caches lack. The whole training split trains 5 epochs (for HLR; 300 would take about
# 12 core-hours per seed here). Run from the repository root:
#   bash experiments/leaderboard_mnist_subset/run.sh
set -euo pipefail
HERE=experiments/leaderboard_mnist_subset
INPC=${INPC:-1 2 5 10 20 50}
for method in diffusion codebook; do
  [[ -f runs/${method}_mnist_subset/generator/model.safetensors ]] || /usr/bin/time -f "$method: %e s" \
    gencond train $method --config configs/$method/mnist_subset.yaml
done
source experiments/_leaderboard.sh
dm_sets configs/dm/mnist_subset.yaml $HERE/dm/dm_mnist_subset
# shellcheck disable=SC2086
gencond bench --dataset mnist --data-root ../shared/data --sets random herding "${DM[@]}" \
  "codebook=generator:runs/codebook_mnist_subset/generator" "diffusion=generator:runs/diffusion_mnist_subset/generator" \
  --inpc $INPC --arch convnet3 --augment dsa --seeds 3 --full-data --full-data-epochs 5 \
  --fidelity --fidelity-net-epochs 2 --workers 2 \
  --output-dir $HERE/bench --full-cache $HERE/bench/full-data.jsonl
cp $HERE/bench/results.json $HERE/bench_leaderboard_mnist_subset.json
