"""Pretraining step throughput by data.residency (device / host / stream / encoded), interleaved in one process.

    PROBCLR_DATA_DIR=../shared/data python benchmarks/residency_throughput.py [--steps 40] [--repeats 3]

The CPU config's full step (batch fetch from the source + two batched views + forward/backward/update of the
small ConvNet), 128 images per batch, shuffled indices as in training; images/s per residency and its ratio
to ``device`` within each repeat, each residency fetching batches in turn and (``+ahead``, as training does
for host / stream / encoded) one step ahead in a background thread; ``encoded`` decodes each batch's JPEGs on
the CPU. Also the process's peak resident memory, and the bytes each store keeps (decoded vs packed JPEGs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from probclr.config import load_config
from probclr.data.augment import SimCLRAugment
from probclr.data.residency import AHEAD, batches, make_source
from probclr.data.sources import load_splits
from probclr.model.backbones import channel_stats
from probclr.model.build import build_model
from probclr.model.losses import nt_xent
from probclr.train.optim import build_optimizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "cifar10_cpu_narrow.yaml")
    images = load_splits(cfg.data).pretrain.images
    cpu = torch.device("cpu")
    cache = Path(tempfile.mkdtemp())
    sources = {m: make_source(images, m, cpu, cache) for m in ("device", "host", "stream")}
    packed = load_splits(dataclasses.replace(cfg.data, residency="encoded", cache_dir=str(cache))).pretrain.images
    sources["encoded"] = make_source(packed, "encoded", cpu, cache)
    store_mb = {"decoded": images.numel() / 2**20,
                "encoded": sum(p.stat().st_size for p in cache.rglob("train.bin")) / 2**20}
    model = build_model(cfg, *channel_stats(images)).to(memory_format=torch.channels_last)
    opt, aug = build_optimizer(model, cfg.optim), SimCLRAugment(cfg.augment)
    gen = torch.Generator().manual_seed(0)

    def step(x: torch.Tensor) -> None:
        views = torch.cat([aug(x, gen), aug(x, gen)]).contiguous(memory_format=torch.channels_last)
        z = model(views)[1].proj  # (2B, P)
        loss = nt_xent(*z.float().chunk(2), cfg.loss.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    runs = [(m, False) for m in sources] + [(m, True) for m in AHEAD]  # without, then with the fetch ahead
    rates: dict[str, list[float]] = {m + ("+ahead" if a else ""): [] for m, a in runs}
    for _ in range(a.repeats):
        for mode, ahead in runs:
            perm = torch.randperm(images.shape[0], generator=gen)
            src = sources[mode]
            step(src.batch(perm[:128]))  # warm-up
            t0 = time.perf_counter()
            for _, x in batches(src, lambda i, p=perm: p[i * 128:(i + 1) * 128], range(1, a.steps + 1), ahead):
                step(x)
            rates[mode + ("+ahead" if ahead else "")].append(a.steps * 128 / (time.perf_counter() - t0))
    ratio = {m: [r / d for r, d in zip(rates[m], rates["device"], strict=True)] for m in rates}
    out = {"threads": torch.get_num_threads(), "images_per_s": rates, "ratio_to_device": ratio,
           "store_mb": store_mb, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
