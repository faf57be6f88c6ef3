#!/usr/bin/env bash
# 1 vs 2 processes on CPU (gloo), same global batch: images/s of the second epoch of a short pretraining run
# (12,800 images, batch 128, configs/cifar10_cpu_narrow.yaml), alternating the settings, REPEATS times each.
#   PROBCLR_DATA_DIR=../shared/data bash benchmarks/ddp_scaling.sh OUT_DIR [REPEATS]
set -euo pipefail
out=${1:-runs/ddp_scaling}; repeats=${2:-3}
py=${PYTHON:-python}
common=(pretrain --config configs/cifar10_cpu_narrow.yaml --device cpu --epochs 2 --set data.train_limit=12800
        --set optim.warmup_epochs=0)
mkdir -p "$out"
for r in $(seq 1 "$repeats"); do
  for setting in 1proc-2threads 1proc-1thread 2proc-1thread; do
    d="$out/$setting-r$r"; rm -rf "$d"
    case $setting in
      1proc-2threads) OMP_NUM_THREADS=2 $py -m cli.main "${common[@]}" --set run.num_threads=2 --out "$d" ;;
      1proc-1thread) OMP_NUM_THREADS=1 $py -m cli.main "${common[@]}" --set run.num_threads=1 --out "$d" ;;
      2proc-1thread) OMP_NUM_THREADS=1 $py -m torch.distributed.run --nproc-per-node 2 --master-port $((29500 + r)) \
                       -m cli.main "${common[@]}" --set run.num_threads=1 --out "$d" ;;
    esac > /dev/null 2>&1
  done
done
$py - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for d in sorted(out.iterdir()):
    if d.is_dir() and (d / "metrics.jsonl").is_file():
        last = json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])
        rows.setdefault(d.name.rsplit("-r", 1)[0], []).append(last["images_per_s"])
summary = {k: {"images_per_s": v, "mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
           for k, v in rows.items()}
(out / "scaling.json").write_text(json.dumps(summary, indent=2) + "\n")
for k, s in summary.items():
    print(f"{k:16s} {s['mean']:8.0f} ± {s['std']:.0f} img/s  ({', '.join(f'{x:.0f}' for x in s['images_per_s'])})")
PY
