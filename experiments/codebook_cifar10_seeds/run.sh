#!/usr/bin/env bash
# Does the shipped CIFAR-10-subset codebook config give the same figures from run to run?
# Trains configs/codebook/cifar10_subset.yaml with training seeds 0, 1 and 2, then benches the
# three generators beside random and herded real images (ConvNet-3, DSA, 300 epochs,
# 3 evaluation seeds, INPC 1 and 10) and pools each config's rows (summarise.py).
# Run from the repository root: bash experiments/codebook_cifar10_seeds/run.sh
set -euo pipefail
CONFIG=configs/codebook/cifar10_subset.yaml
WORK=${WORK:-runs/codebook_cifar10_seeds}
SETS=(random herding)
for seed in 0 1 2; do
  out=$WORK/last_seed$seed
  if [[ ! -f $out/generator/model.safetensors ]]; then
    /usr/bin/time -f "$out: %e s, peak %M KB" gencond train codebook --config $CONFIG --seed $seed \
      --output-dir $out 2>&1 | grep -vE "it/s|s/it" || true
  fi
  SETS+=("codebook-last-s$seed=generator:$out/generator")
done
gencond bench --dataset npz:../shared/data/cifar10-subset --data-root ../shared/data --sets "${SETS[@]}" \
  --inpc 1 10 --arch convnet3 --augment dsa --seeds 3 --no-full-data --no-fidelity --workers 2 \
  --output-dir $WORK/bench
cp $WORK/bench/results.json experiments/codebook_cifar10_seeds/bench_codebook_cifar10_seeds.json
cp $WORK/bench/table.md experiments/codebook_cifar10_seeds/bench_codebook_cifar10_seeds_table.md
python -m experiments.codebook_cifar10_seeds.summarise
