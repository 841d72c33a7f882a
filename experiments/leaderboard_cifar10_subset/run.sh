#!/usr/bin/env bash
# The CIFAR-10-subset leaderboard (../shared/data/cifar10-subset: 4,068 training / 1,017 test
# images): every method's fixed sets under one recipe, with DD-Ranking's scores
# (experiments/_leaderboard.sh: subset_leaderboard says what a stage trains, condenses and benches).
#
# The grid is more than one session on 2 cores, so it runs in stages (INPC="1 10" bash ...).
# The whole training split trains 20 epochs (for HLR), as in experiments/cifar10_subset_report/.
# Run from the repository root:
#   bash experiments/leaderboard_cifar10_subset/run.sh
set -euo pipefail
INPC=${INPC:-1 2 5 10 20 50}
source experiments/_leaderboard.sh
subset_leaderboard cifar10_subset --dataset npz:../shared/data/cifar10-subset --full-data-epochs 20 --fidelity
