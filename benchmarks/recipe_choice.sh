#!/usr/bin/env bash
# The full-budget choice between CPU recipes of BENCHMARKS.md §4, on the 5,000 validation images: each config
# is pretrained at SEED for its own configured epochs (configs whose epochs give the same CPU time, measured
# side by side by benchmarks/recipe_time.sh), then the linear probe at 1 / 10 / 100 % of the label pool
# (3 label subsets each) is scored on validation. The test split is not read.
#   PROBCLR_DATA_DIR=../shared/data bash benchmarks/recipe_choice.sh OUT_DIR SEED CONFIG [CONFIG ...]
# A run is resumed from its last checkpoint; a finished one is skipped. The run directory is
# OUT_DIR/<config name>-s<SEED>.
set -euo pipefail
out=${1:?OUT_DIR}; seed=${2:?SEED}; shift 2
[ $# -ge 1 ] || { echo "give at least one CONFIG (e.g. configs/cifar10_cpu.yaml)" >&2; exit 2; }
mkdir -p "$out"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$out/choice.log"; }
for cfg in "$@"; do
  [ -f "$cfg" ] || { echo "no config file $cfg" >&2; exit 2; }
  run="$out/$(basename "$cfg" .yaml)-s$seed"
  [ -f "$run/eval/last/val/results.json" ] && continue
  log "pretrain $cfg seed $seed"
  resume=""; [ -f "$run/checkpoints/last.pt" ] && resume=--resume
  probclr pretrain --config "$cfg" --seed "$seed" --out "$run" $resume 2>/dev/null | tail -1 | tee -a "$out/choice.log"
  log "evaluate $cfg seed $seed on validation"
  probclr evaluate --run "$run" --split val --fraction 0.01 --fraction 0.1 --fraction 1.0 --seeds 3 \
    --probe linear | tee -a "$out/choice.log"
done
log "done"
