#!/usr/bin/env bash
# The digits leaderboard: every method's fixed sets from INPC 1 to 50 under one recipe, with
# DD-Ranking's scores (the whole training split for HLR; with and without DSA, for ARS).
# DM is condensed at IPC 1, 10 and 50 with the shipped digits config; the generators are the
# shipped checkpoints (DiM, the codebook, the diffusion model).
#
# The grid takes about seven core-hours on 2 cores, more than one session, so it runs in stages
# (INPC="1 2 5 10" LABELS=hard bash ...) and its cell caches live in this folder, in git: every
# stage and every later session trains only the cells they lack. LABELS="hard soft" (the default)
# adds every set again with labels=soft (a ConvNet-3 teacher's logits; its own column, never ranked
# with hard labels). Run from the repository root:
#   bash experiments/leaderboard_digits/run.sh
set -euo pipefail
HERE=experiments/leaderboard_digits
INPC=${INPC:-1 2 5 10 20 50}
LABELS=${LABELS:-hard soft}
source experiments/_leaderboard.sh
dm_sets configs/dm/digits.yaml $HERE/dm/dm_digits
SETS=()
for labels in $LABELS; do
  for set in random herding "${DM[@]}" "DiM=generator:checkpoints/dim_digits" \
    "codebook=generator:checkpoints/codebook_digits" "diffusion=generator:checkpoints/diffusion_digits"; do
    SETS+=("$set$([[ $labels == hard ]] || echo "?labels=$labels")")
  done
done
# shellcheck disable=SC2086
gencond bench --dataset digits --sets "${SETS[@]}" \
  --inpc $INPC --arch convnet3 --augment dsa none --seeds 3 --full-data --no-fidelity --workers 2 \
  --output-dir $HERE/bench --full-cache $HERE/bench/full-data.jsonl
cp $HERE/bench/results.json $HERE/bench_leaderboard_digits.json
