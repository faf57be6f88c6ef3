#!/usr/bin/env bash
# The kappa-variant pilots of BENCHMARKS.md §6, every choice on the 5,000 validation images: each
# variant is 3 epochs of the CPU protocol (--new-loss, or the NT-Xent control) (the session-5 beta pilots' protocol), then the
# validation linear probe at 10 % labels and the validation analysis (R-AUROC, centre crops) of its embeddings.
#   PROBCLR_DATA_DIR=../shared/data bash benchmarks/kappa_variants.sh OUT_DIR [NAME ...]
# NAME is one of the variants below (default: all, in order); a finished variant is skipped.
set -euo pipefail
out=${1:-runs/variants}; shift || true
cfg=configs/cifar10_cpu_narrow.yaml
# nt-xent: the deterministic control (its free norms are the label-free baselines kappa must beat)
declare -A sets=(
  [nt-xent]=""
  [mlp-b1e-3]="--new-loss --set loss.kl_weight=1e-3"
  [implicit-b0]="--new-loss --set loss.kappa_head=implicit --set loss.kl_weight=0"
  [implicit-b1e-3]="--new-loss --set loss.kappa_head=implicit --set loss.kl_weight=1e-3"
  [mlp-d16-b1e-3]="--new-loss --set model.proj_dim=16 --set loss.kl_weight=1e-3"
  [implicit-d16-b0]="--new-loss --set loss.kappa_head=implicit --set model.proj_dim=16 --set loss.kl_weight=0"
  [mlp-2phase-b1e-3]="--new-loss --set loss.phases=mu_then_kappa --set loss.kl_weight=1e-3"
  [implicit-2phase-b0]="--new-loss --set loss.kappa_head=implicit --set loss.phases=mu_then_kappa --set loss.kl_weight=0"
  [vmf-b1e-3]="--new-loss --set loss.posterior=vmf --set loss.kl_weight=1e-3"
)
order=(implicit-b0 implicit-b1e-3 mlp-d16-b1e-3 implicit-d16-b0 mlp-2phase-b1e-3 implicit-2phase-b0 mlp-b1e-3 nt-xent vmf-b1e-3)
names=(${*:-${order[@]}})
mkdir -p "$out"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$out/variants.log"; }
for name in "${names[@]}"; do
  run="$out/$name"
  [ -f "$run/analysis-val/analysis.json" ] && continue
  log "pretrain $name: ${sets[$name]}"
  rm -rf "$run"
  # shellcheck disable=SC2086
  probclr pretrain --config $cfg --epochs 3 --set optim.warmup_epochs=0.5 ${sets[$name]} --seed 0 \
    --out "$run" 2>/dev/null | tail -1 | tee -a "$out/variants.log"
  probclr evaluate --run "$run" --split val --fraction 0.1 --seeds 1 | tee -a "$out/variants.log"
  probclr embed --run "$run" | tail -1
  probclr analyze --run "$run" --split val --seeds 1 --ambiguity-images 2000 --set "eval.fractions=[0.1]" | tail -1
  log "done $name"
done
