#!/usr/bin/env bash
# Pretraining time of two recipes side by side on this machine: one full epoch (all 50,000 CIFAR-10 training
# images, kNN monitor off) of each config, alternating, REPEATS times; prints each epoch's seconds as logged in
# metrics.jsonl. Run it with nothing else on the CPU.
#   PROBCLR_DATA_DIR=../shared/data bash benchmarks/recipe_time.sh OUT_DIR CONFIG_A CONFIG_B [REPEATS=3]
set -euo pipefail
out=${1:?OUT_DIR}; a=${2:?CONFIG_A}; b=${3:?CONFIG_B}; repeats=${4:-3}
mkdir -p "$out"
for r in $(seq 1 "$repeats"); do
  for cfg in "$a" "$b"; do
    run="$out/$(basename "$cfg" .yaml)-r$r"
    rm -rf "$run"
    probclr pretrain --config "$cfg" --epochs 1 --set optim.warmup_epochs=0.5 --set run.monitor_every=0 \
      --out "$run" >/dev/null 2>&1
    python -c "import json,sys; e=[json.loads(l) for l in open(sys.argv[1]) if 'epoch_s' in l][-1]; \
print(sys.argv[2], 'repeat', sys.argv[3], f\"{e['epoch_s']:.1f} s/epoch\", f\"{e['images_per_s']:.0f} images/s\")" \
      "$run/metrics.jsonl" "$cfg" "$r" | tee -a "$out/times.txt"
  done
done
