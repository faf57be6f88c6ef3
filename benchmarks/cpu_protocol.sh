#!/usr/bin/env bash
# The CPU protocol of BENCHMARKS.md: SimCLR (small ConvNet) on all 50,000 CIFAR-10 training images for a
# fixed budget, linear probe / kNN at 1 %, 10 %, 100 % labels (3 label subsets each), a random encoder
# under the same probes, the supervised baseline on the same label subsets (lr and weight decay chosen per
# fraction on the validation split: --tune), and SimCLR with --new-loss. Label subsets come from the label
# pool (45,000 images); the 5,000 validation images are seen by pretraining, unlabeled, and by nothing else.
# In that order: SimCLR at every seed, the random encoder, the supervised baseline, then --new-loss at every seed;
# a finished step is skipped and a pretraining resumes from its last checkpoint, so the script can be re-run.
# STEPS picks the steps to run (default: all four, in that order).
#   PROBCLR_DATA_DIR=../shared/data [CONFIG=configs/cifar10_cpu.yaml] [STEPS="random supervised"] \
#     bash benchmarks/cpu_protocol.sh OUT_DIR [SEEDS...]
set -euo pipefail
out=${1:-runs/protocol}; shift || true
seeds=${*:-0 1 2}
cfg=${CONFIG:-configs/cifar10_cpu.yaml}
steps=" ${STEPS:-simclr random supervised newloss} "
for step in $steps; do
  case $step in simclr|random|supervised|newloss) ;; *) echo "STEPS: unknown step '$step' (valid: simclr random supervised newloss)" >&2; exit 2;; esac
done
wanted() { [[ $steps == *" $1 "* ]]; }
mkdir -p "$out"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$out/protocol.log"; }
simclr() {
  s=$1
  if [ ! -f "$out/simclr-s$s/eval/last/results.json" ]; then
    log "pretrain seed $s"
    resume=""; [ -f "$out/simclr-s$s/checkpoints/last.pt" ] && resume=--resume
    probclr pretrain --config $cfg --seed "$s" --out "$out/simclr-s$s" $resume 2>/dev/null | tee -a "$out/protocol.log"
    log "evaluate seed $s"
    probclr evaluate --run "$out/simclr-s$s" | tee -a "$out/protocol.log"
  fi
}
newloss() {
  s=$1
  if [ ! -f "$out/prob-s$s/eval/last/results.json" ]; then
    log "pretrain --new-loss seed $s"
    resume=""; [ -f "$out/prob-s$s/checkpoints/last.pt" ] && resume=--resume
    probclr pretrain --config $cfg --new-loss --seed "$s" --out "$out/prob-s$s" $resume 2>/dev/null | tee -a "$out/protocol.log"
    log "evaluate --new-loss seed $s"
    probclr evaluate --run "$out/prob-s$s" --method simclr-new-loss | tee -a "$out/protocol.log"
  fi
}
if wanted simclr; then for s in $seeds; do simclr "$s"; done; fi
if wanted random && [ ! -f "$out/random/eval/last/results.json" ]; then
  log "random encoder"
  [ -f "$out/random/checkpoints/last.pt" ] || probclr pretrain --config $cfg --epochs 0 --out "$out/random" 2>/dev/null
  probclr evaluate --run "$out/random" --method random-init | tee -a "$out/protocol.log"
fi
if wanted supervised && [ ! -f "$out/supervised/results.json" ]; then
  log "supervised"
  probclr supervised --config $cfg --seeds 3 --tune --set "supervised.grid_lr=[0.1, 0.2]" \
    --set "supervised.grid_weight_decay=[0.0005, 0.005]" --out "$out/supervised" | tee -a "$out/protocol.log"
fi
if wanted newloss; then for s in $seeds; do newloss "$s"; done; fi
log "done"
