"""Evaluate a frozen encoder at label fractions: linear / MLP probes and kNN on the cached Embeddings' h."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from probclr.config import Config, DataConfig, EvalConfig
from probclr.data.fractions import label_subset
from probclr.data.sources import load_splits
from probclr.data.splits import ImageSet, Splits
from probclr.device import resolve_device
from probclr.eval.embeddings import Embeddings, cached_embeddings
from probclr.eval.frozen_model import load_encoder
from probclr.eval.labels import check_fractions_possible, evaluated_split, num_classes_of, split_sizes
from probclr.eval.results import ResultRow, save_results
from probclr.eval.supervised import Classifier, predict, train_classifier
from probclr.probes.knn import train_knn_probe
from probclr.probes.linear import LogisticFit, train_linear_probe, train_mlp_probe
from probclr.probes.metrics import score
from probclr.provenance import provenance
from probclr.run.checkpoint import file_digest
from probclr.run.rundir import RunDir, config_from_checkpoint, load_run_checkpoint
from probclr.run.runlock import stable_checkpoint

# Probes whose fit is a function of the labeled subset alone (no seed): where label seeds draw the same subset
# (every seed at 100 % labels) the fit is made once and its predictions shared, a bit-identical result. The
# linear probe shares its final refit the same way (its weight-decay choice depends on the seed).
SEEDLESS_PROBES = frozenset({"knn"})


Predictor = Callable[[Tensor], Tensor]  # h (N, D) -> class probabilities (N, C)


@dataclasses.dataclass
class SubsetMemo:
    """What the fits on one labeled subset share between the label seeds that drew it."""

    # seedless probe -> ({evaluated split -> (N, C) probabilities}, detail)
    predictions: dict[str, tuple[dict[str, Tensor], str]] = dataclasses.field(default_factory=dict)
    refits: dict[float, LogisticFit] = dataclasses.field(default_factory=dict)  # weight decay -> the linear final fit


def probe_rows(
    pool: Embeddings, evaluated: Embeddings, cfg: EvalConfig, method: str, num_classes: int,
    log: Callable[[str], None] | None = None,
) -> list[ResultRow]:
    """Every probe at every fraction and label-subset seed; fit on the subset of the label pool's h, scored
    on the evaluated split (test, or validation with --split val); ``log`` hears of each fraction."""
    return probe_rows_by_split(pool, {"evaluated": evaluated}, cfg, method, num_classes, log)["evaluated"]


def probe_rows_by_split(
    pool: Embeddings, evaluated: Mapping[str, Embeddings], cfg: EvalConfig, method: str, num_classes: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[ResultRow]]:
    """`probe_rows` scored on several splits at once (e.g. validation and test): each probe is fitted once per
    labeled subset and seed and every split is scored from that fit, so each split's rows are those of a
    separate call, for one fit's cost."""
    rows: dict[str, list[ResultRow]] = {name: [] for name in evaluated}
    memos: dict[bytes, SubsetMemo] = {}  # keyed by the subset's indices: equal wherever two seeds draw the same
    for fraction in cfg.fractions:
        if log is not None:
            log(f"    {method}: {', '.join(cfg.probes)} at {100 * fraction:g} % labels")
        for seed in range(cfg.seeds):
            idx = label_subset(pool.labels, fraction, seed)
            memo = memos.setdefault(idx.numpy().tobytes(), SubsetMemo())
            x, y = pool.h[idx], pool.labels[idx]  # (n, D), (n,)
            for probe in cfg.probes:
                probs, detail = memo.predictions.get(probe) or _fit_and_predict_all(
                    probe, x, y, evaluated, num_classes, cfg, seed, memo.refits)
                if probe in SEEDLESS_PROBES:
                    memo.predictions[probe] = (probs, detail)
                for name, emb in evaluated.items():
                    s = score(probs[name], emb.labels)
                    rows[name].append(ResultRow.of(method, probe, fraction, seed, int(idx.numel()), s, detail))
    return rows


def _fit_and_predict_all(
    probe: str, x: Tensor, y: Tensor, evaluated: Mapping[str, Embeddings], num_classes: int, cfg: EvalConfig,
    seed: int, refits: dict[float, LogisticFit],
) -> tuple[dict[str, Tensor], str]:
    predict, detail = fit_probe(probe, x, y, num_classes, cfg, seed, refits)
    return {name: predict(emb.h) for name, emb in evaluated.items()}, detail  # split -> (N_split, C)


def fit_probe(
    probe: str, x: Tensor, y: Tensor, num_classes: int, cfg: EvalConfig, seed: int,
    refits: dict[float, LogisticFit] | None = None,
) -> tuple[Predictor, str]:
    """Fit one probe on the labeled subset (x (N, D), y (N,)); its predictor (h -> probabilities) and a
    description. ``refits`` shares the linear probe's final fits between seeds that drew this same subset."""
    if probe == "linear":
        p = train_linear_probe(x, y, num_classes, cfg.weight_decays, cfg.holdout, seed, cfg.max_iter, cfg.probe_tol,
                               refits)
        return p.probs, p.describe()
    if probe == "mlp":
        m = train_mlp_probe(x, y, num_classes, cfg.mlp_hidden, cfg.mlp_epochs, seed)

        def mlp_probs(query: Tensor) -> Tensor:
            with torch.no_grad():
                return torch.softmax(m(query), dim=1)  # (N, C)

        return mlp_probs, ""
    k = train_knn_probe(x, y, num_classes, cfg.knn_k, cfg.knn_max_share, cfg.knn_temperature)
    return k.probs, k.describe()


def finetune_rows(
    ckpt: Path, splits: Splits, evaluated: Mapping[str, ImageSet], cfg: EvalConfig, method: str, num_classes: int,
    run_cfg: Config,
) -> dict[str, list[ResultRow]]:
    """Semi-supervised fine-tuning: the pretrained encoder plus a linear layer, all trained on the labeled
    subset (encoder lr scaled by ``supervised.finetune_lr_scale``), each model scored on every evaluated split;
    reported apart from frozen probes."""

    device = resolve_device(run_cfg.run)
    rows: dict[str, list[ResultRow]] = {name: [] for name in evaluated}
    for fraction in cfg.fractions:
        for seed in range(cfg.seeds):
            idx = label_subset(splits.train.labels, fraction, seed)
            encoder = load_encoder(ckpt).trainable()
            torch.manual_seed(run_cfg.run.seed + 1000 * seed)
            model = Classifier(encoder, num_classes)
            model = train_classifier(run_cfg, model, splits.train.images[idx], splits.train.labels[idx], seed, device,
                                     encoder_lr_scale=run_cfg.supervised.finetune_lr_scale)
            for name, images in evaluated.items():
                s = score(predict(model, images.images, device), images.labels)
                rows[name].append(ResultRow.of(method, "finetune", fraction, seed, int(idx.numel()), s))
    return rows


def evaluate_run(
    run_dir: Path, cfg: EvalConfig | None = None, checkpoint: Path | None = None, data_dir: str | None = None,
    method: str = "simclr", command: list[str] | None = None, finetune: bool = False, split: str = "test",
    data: DataConfig | None = None, log: Callable[[str], None] | None = None,
) -> tuple[list[ResultRow], Path]:
    """Extract (or reuse) features of ``checkpoint`` (default: the run's last) and run every probe, scored on
    ``split`` (test, or val for every choice). Results: ``eval/<checkpoint>/results.json`` (test) or
    ``eval/<checkpoint>/val/results.json``."""
    return evaluate_run_splits(run_dir, cfg, checkpoint, data_dir, method, command, finetune, (split,), data,
                               log)[split]


def evaluate_run_splits(
    run_dir: Path, cfg: EvalConfig | None = None, checkpoint: Path | None = None, data_dir: str | None = None,
    method: str = "simclr", command: list[str] | None = None, finetune: bool = False,
    scored: tuple[str, ...] = ("val", "test"), data: DataConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, tuple[list[ResultRow], Path]]:
    """`evaluate_run` scored on several splits from one fit of each probe (and one fine-tuned model each):
    split -> (rows, results path), each results file as a separate `evaluate_run` of that split writes."""
    if not scored or len(set(scored)) != len(scored):
        raise ValueError(f"scored must name distinct splits, got {scored!r}")
    run = RunDir(run_dir)
    ckpt = Path(checkpoint) if checkpoint else run.require_checkpoint()
    with stable_checkpoint(ckpt) as stable:  # one checkpoint throughout, even while pretraining replaces it
        return _evaluate(run, ckpt, stable, cfg, data_dir, method, command, finetune, scored, data, log)


def _evaluate(
    run: RunDir, ckpt: Path, stable: Path, cfg: EvalConfig | None, data_dir: str | None, method: str,
    command: list[str] | None, finetune: bool, scored: tuple[str, ...], data: DataConfig | None,
    log: Callable[[str], None] | None = None,
) -> dict[str, tuple[list[ResultRow], Path]]:
    state = load_run_checkpoint(run, stable)
    run_cfg = config_from_checkpoint(state)
    cfg = cfg or run_cfg.eval
    data_cfg = data or run_cfg.data
    if data_dir is not None:
        data_cfg = dataclasses.replace(data_cfg, data_dir=data_dir)
    t0 = time.perf_counter()
    splits = load_splits(data_cfg)
    num_classes = num_classes_of(splits)
    evaluated = {name: evaluated_split(splits, name) for name in scored}
    check_fractions_possible(splits.train.labels, cfg.fractions)
    digest = file_digest(stable)
    embs = cached_embeddings(run.root, stable, {"train": splits.train, **evaluated}, cfg.batch_size, digest)
    rows = probe_rows_by_split(embs["train"], {name: embs[name] for name in scored}, cfg, method, num_classes, log)
    if finetune:
        for name, tuned in finetune_rows(stable, splits, evaluated, cfg, method, num_classes, run_cfg).items():
            rows[name] += tuned
    meta = {
        "run_dir": str(run.root), "checkpoint": str(ckpt), "checkpoint_sha256": digest,
        "checkpoint_epoch": int(state.get("epoch", -1)), "eval_config": dataclasses.asdict(cfg),
        "run_config": state["config"], "provenance": provenance(torch.device("cpu"), command),
        "wall_s": time.perf_counter() - t0, "scored_together": list(scored), "split_sizes": split_sizes(splits),
        "data_config": dataclasses.asdict(data_cfg),
    }
    return {name: (rows[name], save_results(run.eval_dir(ckpt, name), rows[name], {**meta, "split": name}))
            for name in scored}
