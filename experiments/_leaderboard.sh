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
