#!/usr/bin/env bash
# The --new-loss study of BENCHMARKS.md §6: the CPU protocol (configs/cifar10_cpu_narrow.yaml, 30 epochs)
# for --new-loss (its default variant), its deterministic baseline (loss.name=shrinkage) and NT-Xent, each
# over pretraining seeds; every run is evaluated at 1 / 10 / 100 % labels, embedded and analysed on the 10,000
# test images with CIFAR-10H (the verified JPEG alignment), then `probclr report` gives each measure's seed-level mean and 95 % interval
# and kappa's verdict against the best label-free baseline. Variants are chosen on validation images first
# (benchmarks/kappa_variants.sh); this script reads test only for the numbers it reports.
#   PROBCLR_DATA_DIR=../shared/data bash benchmarks/kappa_protocol.sh OUT_DIR [SEEDS...]
# EPOCHS (default 30, the protocol) shortens every run alike; METHODS (default "prob simclr shrink")
# picks the methods. Runs go seed by seed (prob, simclr, shrink at seed 0, then seed 1, ...) so that a cut
# leaves paired runs of each method. Finished steps are skipped and a stopped pretraining resumes, so the
# script can be re-run after a cut.
# Time: one --new-loss run is ~25 min on an AVX-512 2-core machine, ~80 min on an AVX2 one (BENCHMARKS §6).
set -euo pipefail
out=${1:-runs/kappa}; shift || true
seeds=${*:-0 1 2}
cfg=configs/cifar10_cpu_narrow.yaml
epochs=${EPOCHS:-30}
methods=${METHODS:-prob simclr shrink}
h=${PROBCLR_DATA_DIR:?set PROBCLR_DATA_DIR (the folder with cifar10-jpeg/ and cifar10h/)}/cifar10h
mkdir -p "$out"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$out/kappa.log"; }
one() {  # name seed pretrain-flags...
  name=$1 s=$2; shift 2
  run="$out/$name-s$s"
  if [ ! -f "$run/analysis/analysis.json" ]; then
    resume=""; [ -f "$run/checkpoints/last.pt" ] && resume=--resume
    log "pretrain $name seed $s"
    probclr pretrain --config $cfg "$@" --set optim.epochs="$epochs" --seed "$s" --out "$run" $resume 2>/dev/null | tail -1 | tee -a "$out/kappa.log"
    [ -f "$run/eval/last/results.json" ] || probclr evaluate --run "$run" --method "$name" | tee -a "$out/kappa.log"
    probclr embed --run "$run" | tail -1
    probclr analyze --run "$run" --cifar10h "$h/cifar10h-probs.npy" --cifar10h-order "$h/cifar10h-order-jpeg.npy" \
      --map-points 300 | tail -1
    log "done $name seed $s"
  fi
}
for s in $seeds; do
  for m in $methods; do
    case $m in
      prob) one prob "$s" --new-loss ;;
      simclr) one simclr "$s" ;;
      shrink) one shrink "$s" --set loss.name=shrinkage ;;
      *) echo "unknown method '$m' (valid: prob, simclr, shrink)" >&2; exit 2 ;;
    esac
  done
done
runs=$(ls -d "$out"/*-s*/ 2>/dev/null | while read -r d; do [ -f "$d/analysis/analysis.json" ] && echo "$d"; done)
probclr report $runs --out "$out/report" --title "kappa on the CPU protocol ($epochs epochs)"
log "report: $out/report/summary.md"
