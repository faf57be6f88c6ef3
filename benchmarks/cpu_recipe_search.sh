#!/usr/bin/env bash
# The CPU-recipe search of BENCHMARKS.md §4, every choice on the 5,000 validation images: each candidate is
# the narrow CPU config (configs/cifar10_cpu_narrow.yaml) with one change, pretrained for EPOCHS (default 3;
# warm-up half an epoch, kNN monitor off) on all 50,000 training images, then the linear probe at 1 / 10 / 100 %
# of the label pool (one label subset) scored on validation. The per-epoch wall time is in each run's metrics.jsonl.
#   PROBCLR_DATA_DIR=../shared/data [EPOCHS=3] bash benchmarks/cpu_recipe_search.sh OUT_DIR SEED NAME [NAME ...]
# A finished candidate is skipped; `python benchmarks/summarise_recipe.py OUT_DIR` tabulates them.
set -euo pipefail
out=${1:?OUT_DIR}; seed=${2:?SEED}; shift 2
epochs=${EPOCHS:-3}
cfg=configs/cifar10_cpu_narrow.yaml
declare -A sets=(
  [base]=""
  [crop0.2]="--set augment.crop_scale=[0.2,1.0]"
  [crop0.35]="--set augment.crop_scale=[0.35,1.0]"
  [lr2x]="--set optim.lr=0.008"
  [lr0.5x]="--set optim.lr=0.002"
  [t0.1]="--set loss.temperature=0.1"
  [t0.3]="--set loss.temperature=0.3"
  [hidden1024]="--set model.proj_hidden=1024"
  [wd1e-2]="--set optim.weight_decay=0.01"
  [nopool]="--set model.convnet_pool_last=false"
  [w24-512-nopool]="--set model.convnet_widths=[24,64,128,512] --set model.convnet_pool_last=false"
  [w16-512-nopool]="--set model.convnet_widths=[16,64,128,512] --set model.convnet_pool_last=false"
  [w16-768-nopool]="--set model.convnet_widths=[16,64,128,768] --set model.convnet_pool_last=false"
  [w16-1024-nopool]="--set model.convnet_widths=[16,48,128,1024] --set model.convnet_pool_last=false"
  [w16-768-nopool-whiten]="--set model.convnet_widths=[16,64,128,768] --set model.convnet_pool_last=false --set model.convnet_whiten=true"
)
mkdir -p "$out"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$out/search.log"; }
for name in "$@"; do
  [ -n "${sets[$name]+x}" ] || { echo "unknown candidate $name; known: ${!sets[*]}" >&2; exit 2; }
  run="$out/$name-s$seed"
  [ -f "$run/eval/last/results.json" ] && continue
  log "pretrain $name seed $seed: ${sets[$name]}"
  rm -rf "$run"
  # shellcheck disable=SC2086
  probclr pretrain --config $cfg --epochs "$epochs" --seed "$seed" --set optim.warmup_epochs=0.5 \
    --set run.monitor_every=0 ${sets[$name]} --out "$run" 2>/dev/null | tail -1 | tee -a "$out/search.log"
  probclr evaluate --run "$run" --split val --fraction 0.01 --fraction 0.1 --fraction 1.0 --seeds 1 \
    --probe linear | tee -a "$out/search.log"
  log "done $name seed $seed"
done
