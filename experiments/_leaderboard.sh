# Sourced by the leaderboard drivers (experiments/leaderboard_*/run.sh).
# dm_sets CONFIG PREFIX: DM condensed with CONFIG at IPC 1, 10 and 50 where $INPC holds them
# (PREFIX_ipcN.safetensors, condensed only where missing); fills DM with their set entries.
dm_sets() {
  DM=()
  local ipc out
  for ipc in 1 10 50; do
    [[ " $INPC " == *" $ipc "* ]] || continue
    out=$2_ipc$ipc.safetensors
    [[ -f $out ]] || /usr/bin/time -f "DM IPC $ipc: %e s" gencond condense dm --config "$1" --ipc $ipc --output "$out"
    DM+=("DM=condensed:$out")
  done
}

# subset_leaderboard NAME BENCH-FLAGS...: one stage of a subset's leaderboard (experiments/leaderboard_NAME/,
# INPC from $INPC). The diffusion and codebook generators are trained by their shipped NAME configs where
# runs/ lacks them (their default output folders; the same seed retrains them bit for bit on this machine
# type), DM is condensed by configs/dm/NAME.yaml, and one `gencond bench` (ConvNet-3, DSA, 3 seeds, the
# whole split for HLR, the flags given for the dataset and the rest) measures every set; its cell caches
# and DM's sets stay in the folder, so a later stage trains only the cells they lack.
subset_leaderboard() {
  local name=$1 here=experiments/leaderboard_$1 method
  shift
  for method in diffusion codebook; do
    [[ -f runs/${method}_$name/generator/model.safetensors ]] || /usr/bin/time -f "$method: %e s" \
      gencond train $method --config configs/$method/$name.yaml
  done
  dm_sets configs/dm/$name.yaml $here/dm/dm_$name
  # shellcheck disable=SC2086
  gencond bench "$@" --sets random herding "${DM[@]}" "codebook=generator:runs/codebook_$name/generator" \
    "diffusion=generator:runs/diffusion_$name/generator" --inpc $INPC --arch convnet3 --augment dsa --seeds 3 \
    --full-data --workers 2 --output-dir $here/bench --full-cache $here/bench/full-data.jsonl
  cp $here/bench/results.json $here/bench_leaderboard_$name.json
}
