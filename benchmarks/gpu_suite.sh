#!/usr/bin/env bash
# The GPU suite: one command that turns a lent GPU into verified numbers, without any download.
#   PROBCLR_DATA_DIR=DIR/with/cifar10-jpeg bash benchmarks/gpu_suite.sh OUT_DIR [--smoke]
# (1) `probclr bench`: ResNet-18, batch 512, bf16, channels-last: augmentation, model-only ceiling, full step,
#     per-image DataLoader peer; eager and torch.compile;
# (2) SimCLR ResNet-18 on CIFAR-10, the paper's recipe, for as many epochs as fit in SUITE_MINUTES (default 25)
#     at the measured full-step rate, kNN-monitored per epoch on the validation split;
# (3) linear / kNN evaluation at 1 / 10 / 100 % labels (test) ; (4) a short --new-loss run and its kappa stats.
# Writes OUT_DIR/suite.json and OUT_DIR/suite.md (device, torch / CUDA versions, every command).
# --smoke: the same path on the CPU with the digits and a tiny ConvNet, in about a minute (run by the tests).
set -euo pipefail
out=${1:?usage: gpu_suite.sh OUT_DIR [--smoke]}
smoke=${2:-}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python}
mkdir -p "$out"
: > "$out/commands.txt"
run() { echo "$*" >> "$out/commands.txt"; "$@"; }
if [ "$smoke" = "--smoke" ]; then
  cfg="$here/configs/digits_demo.yaml"
  base=(--set run.device=cpu --set "model.convnet_widths=[8, 16]" --set optim.batch_size=64 --set run.monitor_every=1)
  bench=(--steps 2 --warmup 1 --workers 0)
  minutes=0.05; newloss_epochs=1; fractions=(--fraction 0.1 --fraction 1.0)
else
  cfg="$here/configs/cifar10_resnet18.yaml"
  base=(--set run.device=cuda --set run.monitor_every=1)
  bench=(--steps 30 --warmup 5 --workers 8)
  minutes=${SUITE_MINUTES:-25}; newloss_epochs=${SUITE_NEWLOSS_EPOCHS:-15}; fractions=()
fi
P=("$py" -m cli.main)
run "${P[@]}" bench --config "$cfg" "${base[@]}" "${bench[@]}" --out "$out/bench_eager.json"
run "${P[@]}" bench --config "$cfg" "${base[@]}" --set run.compile=true "${bench[@]}" --out "$out/bench_compiled.json" \
  || echo "torch.compile bench failed; see the log" >&2
# epochs that fit the budget at the measured full-step rate (two views per image, images of the pretraining set)
epochs=$("$py" "$here/benchmarks/gpu_summary.py" epochs "$out/bench_eager.json" "$cfg" "$minutes" "${base[@]}")
run "${P[@]}" pretrain --config "$cfg" "${base[@]}" --epochs "$epochs" --set optim.warmup_epochs="$(( epochs / 10 ))" \
  --out "$out/simclr" > "$out/simclr.log"
run "${P[@]}" evaluate --run "$out/simclr" "${fractions[@]}" > "$out/evaluate.log"
run "${P[@]}" pretrain --config "$cfg" "${base[@]}" --new-loss --epochs "$newloss_epochs" --set optim.warmup_epochs=0 \
  --out "$out/newloss" > "$out/newloss.log"
"$py" "$here/benchmarks/gpu_summary.py" summary "$out"
echo "suite: $out/suite.json, $out/suite.md"
