#!/usr/bin/env bash
# The MNIST-subset leaderboard (../shared/data: 17,435 training / 10,000 test images): every
# method's fixed sets under one recipe, with DD-Ranking's scores (experiments/_leaderboard.sh:
# subset_leaderboard says what a stage trains, condenses and benches).
#
# The grid is more than one session on 2 cores, so it runs in stages (INPC="1 10" bash ...).
# The whole training split trains 5 epochs (for HLR; 300 would take about 12 core-hours per
# seed here). Run from the repository root:
#   bash experiments/leaderboard_mnist_subset/run.sh
set -euo pipefail
INPC=${INPC:-1 2 5 10 20 50}
source experiments/_leaderboard.sh
subset_leaderboard mnist_subset --dataset mnist --data-root ../shared/data --full-data-epochs 5 \
  --fidelity --fidelity-net-epochs 2
