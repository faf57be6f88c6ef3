"""``probclr controlled``: every method trained on pairs from the known process, per seed, and measured
against the truth on held-out observations. Resumable: each finished (method, seed) is a line of
``rows.jsonl`` and is never retrained; ``results.json``, ``table.md`` and the figure are rebuilt from them."""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from probclr.errors import ConfigError
from probclr.io import append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl
from probclr.provenance import provenance
from probclr.run.runlock import RunLock
from probclr.train.step import contrastive_loss, phase_at
from studies.controlled.measures import (
    coverage,
    coverage_error,
    pairwise_cosine_spearman,
    procrustes_r2,
    spearman,
)
from studies.controlled.methods import METHODS, Method, build, certainty, method, method_config
from studies.controlled.process import Posterior, ProcessConfig, observations, positive_pairs
from studies.controlled.summary import kappa_figure, summary_table

Split = Literal["val", "test"]


@dataclass(frozen=True)
class StudyConfig:
    """The training budget and the evaluation set; the process is in ``process``."""
    process: ProcessConfig = field(default_factory=ProcessConfig)
    batch: int = 64  # pairs per step (2 x batch views, all-pairs negatives)
    train_batches: int = 1600  # fixed training pairs: train_batches x batch, the same for every method of a seed
    steps: int = 4000  # Adam steps, cosine decay of the learning rate to 0
    lr: float = 1e-3
    samples: int = 16  # Monte-Carlo draws of every embedding per step (MC-InfoNCE; a method may set its own)
    width: int = 128  # MLP encoder and head width
    eval_points: int = 4000  # held-out observations per split


FULL = StudyConfig()
QUICK = StudyConfig(train_batches=60, steps=240, eval_points=1200)


def _stream(seed: int, purpose: int) -> torch.Generator:
    """One seeded stream per purpose: 0 the process, 1 training pairs, 2 / 3 val / test observations, 4 / 6 their
    true latents (5 is the model's initialisation and loss draws, through torch's global stream)."""
    return torch.Generator().manual_seed(1000 * seed + purpose)


class Data(NamedTuple):
    """One seed's world: the process, the training pairs, and the held-out observations with their true latents."""
    post: Posterior
    pairs: list[tuple[Tensor, Tensor]]  # train_batches x ((B, dim_x), (B, dim_x))
    x_eval: Tensor  # (E, dim_x)
    z_eval: Tensor  # (E, dim_z) one draw of each observation's true posterior


def make_data(study: StudyConfig, seed: int, split: Split) -> Data:
    """The process and data of ``seed``; the held-out set of ``split`` (val for choices, test for reporting)."""
    post = Posterior(study.process, _stream(seed, 0))
    gen = _stream(seed, 1)
    pairs = [positive_pairs(post, study.batch, gen) for _ in range(study.train_batches)]
    x_eval = observations(study.eval_points, study.process.dim_x, _stream(seed, 2 if split == "val" else 3))
    z_eval = post.draw(x_eval, _stream(seed, 4 if split == "test" else 6))
    return Data(post, pairs, x_eval, z_eval)


def train(m: Method, study: StudyConfig, data: Data, seed: int) -> tuple[torch.nn.Module, float]:
    """Method ``m`` trained on the seed's pairs; returns the model (eval mode) and the mean loss of the last
    10 % of steps."""
    p = study.process
    cfg = method_config(m, p.dim_z, 1 / p.kappa_pos, study.samples, study.width)
    torch.manual_seed(1000 * seed + 5)  # the same initialisation stream and loss draws for every method
    model = build(cfg, p.dim_x, study.width)
    opt = torch.optim.Adam(model.parameters(), lr=study.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / study.steps)))
    tail: list[float] = []
    for step in range(study.steps):
        xa, xb = data.pairs[step % len(data.pairs)]
        _, out = model(torch.cat([xa, xb]))  # HeadOutput over 2B views
        loss, _ = contrastive_loss(out, cfg, phase_at(cfg, step / study.steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= study.steps * 0.9:
            tail.append(float(loss.detach()))
    return model.eval(), float(np.mean(tail))


@torch.no_grad()
def measure(model: torch.nn.Module, m: Method, data: Data) -> tuple[dict[str, Any], Tensor, Tensor]:
    """Every measure of one trained method on the held-out observations; also (kappa*, certainty) for the figure."""
    h, out = model(data.x_eval)
    mu_true, kappa_true = data.post(data.x_eval)  # (E, D), (E,)
    k_hat = certainty(out)  # (E,)
    r2, rot = procrustes_r2(out.mu, mu_true)
    row: dict[str, Any] = {
        "spearman_kappa_true": spearman(k_hat, kappa_true),
        "mu_recovery": pairwise_cosine_spearman(out.mu, mu_true),
        "procrustes_r2": r2,
        "spearman_proj_norm": spearman(out.proj.float().norm(dim=1), kappa_true),
        "spearman_feature_norm": spearman(h.norm(dim=1), kappa_true),
        "kappa_hat_median": float(k_hat.median()), "kappa_true_median": float(kappa_true.median()),
    }
    if m.family is not None:
        half = data.x_eval.shape[0] // 2  # the rotation was fitted on the first half: score the second
        z_rot = data.z_eval[half:].double() @ rot  # (E/2, D) true latents in the encoder's space
        cov = coverage(out.mu[half:], k_hat[half:], z_rot, m.family)
        row.update({f"coverage_{round(100 * lv)}": c for lv, c in cov.items()})
        row["coverage_error"] = coverage_error(cov)
    return row, kappa_true, k_hat


class ControlledResult(NamedTuple):
    """The rows (one per method and seed), and the files written."""
    rows: list[dict[str, Any]]
    results: Path
    table: Path
    figure: Path


def run_controlled(
    out: Path, seeds: int, quick: bool = False, split: Split = "test", methods: list[str] | None = None,
    command: list[str] | None = None, log: Callable[[str], None] = lambda s: None,
    study: StudyConfig | None = None,
) -> ControlledResult:
    """Train and measure every method for seeds 0 .. seeds-1 into ``out`` (one writer; finished pairs kept)."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if split not in ("val", "test"):
        raise ConfigError(f"--split must be val or test, got {split!r}")
    chosen = [method(n) for n in methods] if methods else list(METHODS)
    study = study or (QUICK if quick else FULL)
    with RunLock(out):
        spec = {"study": asdict(study), "split": split, "quick": quick}
        _check_same_study(out, spec)
        done = {(r["method"], r["seed"]) for r in _rows(out)}
        for seed in range(seeds):
            todo = [m for m in chosen if (m.name, seed) not in done]
            if not todo:
                continue
            log(f"seed {seed}: generating the process and {study.train_batches * study.batch} pairs")
            data = make_data(study, seed, split)
            for m in todo:
                t0 = time.perf_counter()
                model, loss = train(m, study, data, seed)
                row, k_true, k_hat = measure(model, m, data)
                row = {"method": m.name, "seed": seed, "split": split, **row, "final_loss": loss,
                       "wall_s": time.perf_counter() - t0}
                _save_points(out, m.name, seed, k_true, k_hat)
                append_jsonl(out / "rows.jsonl", row)
                log(f"seed {seed} {m.name}: Spearman(kappa, kappa*) {row['spearman_kappa_true']:+.3f}, "
                    f"mu recovery {row['mu_recovery']:.3f} ({row['wall_s']:.0f} s)")
        rows = [r for r in _rows(out) if r["seed"] < seeds and r["method"] in {m.name for m in chosen}]
        return _write_outputs(out, rows, spec, command)


def _rows(out: Path) -> list[dict[str, Any]]:
    return read_jsonl(out / "rows.jsonl") if (out / "rows.jsonl").is_file() else []


def _check_same_study(out: Path, spec: dict[str, Any]) -> None:
    """A directory holds one study: rows from another budget or split are never mixed in."""
    path = out / "study.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(spec)):
            raise ConfigError(f"{out} holds a controlled study with other settings ({path}); use another --out")
    else:
        atomic_write_json(path, spec)


def _save_points(out: Path, name: str, seed: int, k_true: Tensor, k_hat: Tensor) -> None:
    buf = io.BytesIO()
    np.savez(buf, kappa_true=k_true.numpy(), kappa_hat=k_hat.numpy())
    (out / "points").mkdir(exist_ok=True)
    atomic_write_bytes(out / "points" / f"{name}-s{seed}.npz", buf.getvalue())


def _write_outputs(out: Path, rows: list[dict[str, Any]], spec: dict[str, Any], command: list[str] | None
                   ) -> ControlledResult:
    results = out / "results.json"
    atomic_write_json(results, {"rows": rows, **spec, "provenance": provenance(torch.device("cpu"), command)})
    table = out / "table.md"
    atomic_write_text(table, summary_table(rows, spec))
    figure = kappa_figure(out / "points", rows, out / "kappa_vs_true.png")
    return ControlledResult(rows, results, table, figure)

