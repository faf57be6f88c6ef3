"""Cost of --new-loss: epoch time of the probabilistic head + MCInfoNCE against NT-Xent, measured in one run.

The two losses alternate (NT-Xent, new loss, NT-Xent, ...) on the same data so that machine noise hits
both alike; the ratio is reported per pair and as mean ± std.

    PROBCLR_DATA_DIR=../shared/data python benchmarks/new_loss_cost.py --repeats 3 --out bench/new_loss_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from probclr.config import load_config
from probclr.io import atomic_write_json
from probclr.train.pretrain import pretrain


def epoch_seconds(loss: str, limit: int, config: str, work: Path) -> float:
    cfg = load_config(config, [f"data.train_limit={limit}", "optim.epochs=2", f"loss.name={loss}"])
    out = work / f"{loss}-{len(list(work.iterdir()))}"
    pretrain(cfg, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return float(rows[-1]["epoch_s"])  # the second epoch: caches and allocator warm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/cifar10_cpu_narrow.yaml")
    ap.add_argument("--limit", type=int, default=10000, help="training images per epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/new_loss_cost.json")
    args = ap.parse_args()
    ratios, nt, mc = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            a = epoch_seconds("nt_xent", args.limit, args.config, Path(tmp))
            b = epoch_seconds("mc_infonce", args.limit, args.config, Path(tmp))
            nt.append(a)
            mc.append(b)
            ratios.append(b / a)
            print(f"NT-Xent epoch {a:.2f} s, --new-loss epoch {b:.2f} s, ratio {b / a:.3f}", flush=True)
    result = {"config": args.config, "images_per_epoch": args.limit, "nt_xent_epoch_s": nt, "new_loss_epoch_s": mc,
              "ratio_mean": statistics.mean(ratios), "ratio_std": statistics.stdev(ratios) if len(ratios) > 1 else 0.0}
    atomic_write_json(Path(args.out), result)
    print(f"--new-loss / NT-Xent epoch time: {result['ratio_mean']:.3f} ± {result['ratio_std']:.3f}")


if __name__ == "__main__":
    main()
