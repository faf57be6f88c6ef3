#!/usr/bin/env bash
# Soft-label positives on real images with known ambiguity (benchmarks/mixed_ambiguity.py, BENCHMARKS §15):
# the CPU config's ConvNet pretrained on blended CIFAR-10 images, four methods per seed, then each run's
# certainty scores against the known ambiguity on the blended validation and test images.
#   bash benchmarks/mixed_ambiguity.sh MIXED_DIR OUT_DIR [SEEDS...]      (EPOCHS, default 10)
# Methods: prob-soft (--new-loss, soft-label pairs), shrink-soft (the deterministic per-view temperature,
# soft-label pairs), simclr-soft (NT-Xent, soft-label pairs: its free norms), prob-aug (--new-loss with
# augmentation pairs on the same images: what the soft labels add). Soft-label runs augment each image by a
# flip only (SOFT_AUG=flip, chosen on validation by the kNN monitor's accuracy; SOFT_AUG=full keeps the CPU
# config's augmentations); prob-aug keeps the CPU config's. Finished runs are skipped.
set -euo pipefail
mixed=${1:?blended folder made by mixed_ambiguity.py build}; out=${2:?output folder}; shift 2
seeds=${*:-0 1 2}
epochs=${EPOCHS:-10}
soft=(--set data.pairs=soft_labels --set "data.soft_labels=$mixed/soft_labels.npy")
if [ "${SOFT_AUG:-flip}" = flip ]; then
  soft+=(--set augment.crop=false --set augment.color_jitter=false --set augment.grayscale=false)
fi
mkdir -p "$out"
for s in $seeds; do
  for m in prob-soft shrink-soft simclr-soft prob-aug; do
    run="$out/$m-s$s"
    [ -f "$run/scores.json" ] && continue
    case $m in
      prob-soft) flags=(--new-loss "${soft[@]}") ;;
      shrink-soft) flags=(--set loss.name=shrinkage "${soft[@]}") ;;
      simclr-soft) flags=("${soft[@]}") ;;
      prob-aug) flags=(--new-loss) ;;
    esac
    rm -rf "$run"
    echo "[$(date -u +%H:%M:%S)] $m seed $s"
    probclr pretrain --config configs/cifar10_cpu_narrow.yaml --dataset imagefolder --data-dir "$mixed" --epochs "$epochs" \
      "${flags[@]}" --seed "$s" --out "$run" 2>/dev/null | tail -1
    for split in val test; do
      python benchmarks/mixed_ambiguity.py score "$run" --mixed "$mixed" --split $split --json "$run/scores-$split.json"
    done
    cp "$run/scores-test.json" "$run/scores.json"
  done
done
