#!/usr/bin/env bash
# The digits leaderboard: every method's fixed sets from INPC 1 to 50 under one recipe, with
# DD-Ranking's scores (the whole training split for HLR; with and without DSA, for ARS).
# DM is condensed at IPC 1, 10 and 50 with the shipped digits config; the generators are the
# shipped checkpoints (DiM, the codebook, the diffusion model).
# Run from the repository root: bash experiments/leaderboard_digits/run.sh
set -euo pipefail
WORK=${WORK:-runs/leaderboard_digits}
DM=()
for ipc in 1 10 50; do
  out=$WORK/dm_digits_ipc$ipc.safetensors
  [[ -f $out ]] || /usr/bin/time -f "DM IPC $ipc: %e s" gencond condense dm --config configs/dm/digits.yaml \
    --ipc $ipc --output $out
  DM+=("DM=condensed:$out")
done
gencond bench --dataset digits --sets random herding "${DM[@]}" "DiM=generator:checkpoints/dim_digits" \
  "codebook=generator:checkpoints/codebook_digits" "diffusion=generator:checkpoints/diffusion_digits" \
  --inpc 1 2 5 10 20 50 --arch convnet3 --augment dsa none --seeds 3 --full-data --no-fidelity --workers 2 \
  --output-dir $WORK/bench --full-cache $WORK/full-data.jsonl
cp $WORK/bench/results.json experiments/leaderboard_digits/bench_leaderboard_digits.json
