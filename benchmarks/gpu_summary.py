"""Helpers of benchmarks/gpu_suite.sh: the epoch budget, and the suite's JSON + Markdown summary.

    python benchmarks/gpu_summary.py epochs BENCH.json CONFIG MINUTES [--set k=v ...]
    python benchmarks/gpu_summary.py summary OUT_DIR
"""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from probclr.config import load_config
from probclr.data.sources import load_splits


def epochs_for(bench: Path, config: str, minutes: float, sets: list[str]) -> int:
    """Whole epochs of the pretraining set that fit ``minutes`` at the benchmark's full-step images/s."""
    rate = json.loads(bench.read_text())["images_per_s"]["full_step"]
    overrides = [s for s in sets if s != "--set"]
    n = load_splits(load_config(config, overrides).data).pretrain.images.shape[0]
    return max(1, math.floor(minutes * 60 * rate / n))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def summary(out: Path) -> dict[str, Any]:
    """suite.json and suite.md from the suite's outputs."""
    benches = {k: json.loads((out / f"bench_{k}.json").read_text()) for k in ("eager", "compiled")
               if (out / f"bench_{k}.json").is_file()}
    metrics, newloss = _jsonl(out / "simclr" / "metrics.jsonl"), _jsonl(out / "newloss" / "metrics.jsonl")
    results = json.loads((out / "simclr" / "eval" / "last" / "results.json").read_text())
    device = benches["eager"]["device"] if benches else "?"
    res = {
        "device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "bench": benches, "pretrain": {"epochs": len(metrics), "epoch_s_median": _median([m["epoch_s"] for m in metrics]),
                                       "images_per_s_median": _median([m["images_per_s"] for m in metrics]),
                                       "knn_val_acc": [m.get("knn_val_acc") for m in metrics]},
        "linear_and_knn": results["summary"], "newloss_last_epoch": newloss[-1] if newloss else {},
        "commands": (out / "commands.txt").read_text().splitlines(),
    }
    (out / "suite.json").write_text(json.dumps(res, indent=2))
    (out / "suite.md").write_text(_markdown(res))
    return res


def _median(xs: list[float]) -> float:
    return float(sorted(xs)[len(xs) // 2]) if xs else float("nan")


def _markdown(r: dict[str, Any]) -> str:
    lines = [f"### GPU suite on {r['device']} (torch {r['torch']}, CUDA {r['cuda']})", "",
             "| measurement | images/s | ratios |", "|---|---|---|"]
    for name, b in r["bench"].items():
        ips, q = b["images_per_s"], b["ratios"]
        lines.append(f"| bench {name}: ceiling / full step / per-image DataLoader | {ips['model_ceiling']:.0f} / "
                     f"{ips['full_step']:.0f} / {ips['peer_dataloader']:.0f} | full/ceiling {q['full_vs_ceiling']:.2f},"
                     f" full/peer {q['full_vs_peer']:.2f} |")
    p = r["pretrain"]
    lines += ["", f"Pretraining: {p['epochs']} epochs, median epoch {p['epoch_s_median']:.1f} s"
              f" ({p['images_per_s_median']:.0f} images/s); kNN monitor (val) last: {p['knn_val_acc'][-1:]}", "",
              "| probe | fraction | accuracy % (mean ± std over label subsets) |", "|---|---|---|"]
    for s in r["linear_and_knn"]:
        std = s.get("accuracy_std")
        spread = f" ± {100 * std:.1f}" if isinstance(std, float) and not math.isnan(std) else ""
        lines.append(f"| {s['probe']} | {s['fraction']:g} | {100 * s['accuracy_mean']:.1f}{spread} |")
    k = r["newloss_last_epoch"]
    if k:
        lines += ["", f"--new-loss, last epoch: loss {k.get('loss', float('nan')):.3f}, kappa q10/50/90 "
                  f"{k.get('kappa_q10', float('nan')):.0f} / {k.get('kappa_q50', float('nan')):.0f} / "
                  f"{k.get('kappa_q90', float('nan')):.0f}"]
    lines += ["", "Commands:", "", "```", *r["commands"], "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "epochs":
        print(epochs_for(Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5:]))
    else:
        summary(Path(sys.argv[2]))
