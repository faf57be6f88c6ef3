"""Evaluate a frozen encoder at label fractions: linear / MLP probes and kNN on cached features."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from probclr.config import Config, EvalConfig
from probclr.data import Splits
from probclr.datasets import load_splits
from probclr.errors import ProbclrError
from probclr.features import Features, cached_features
from probclr.fractions import check_fraction, label_subset
from probclr.metrics import score
from probclr.probes import knn_probs, train_linear_probe, train_mlp_probe
from probclr.provenance import provenance
from probclr.results import ResultRow, save_results
from probclr.rundir import RunDir, config_from_checkpoint, load_run_checkpoint


def probe_rows(feats: Features, cfg: EvalConfig, method: str, num_classes: int) -> list[ResultRow]:
    """Every probe at every fraction and label-subset seed; fit on the subset, scored on the test set."""
    rows: list[ResultRow] = []
    for fraction in cfg.fractions:
        for seed in range(cfg.seeds):
            idx = label_subset(feats.train_y, fraction, seed)
            x, y = feats.train_x[idx], feats.train_y[idx]
            n = int(idx.numel())
            if "linear" in cfg.probes:
                p = train_linear_probe(x, y, num_classes, cfg.weight_decays, cfg.holdout, seed, cfg.max_iter)
                s = score(p.probs(feats.test_x), feats.test_y)
                rows.append(ResultRow.of(method, "linear", fraction, seed, n, s, f"wd={p.weight_decay:g} ({p.selection})"))
            if "mlp" in cfg.probes:
                m = train_mlp_probe(x, y, num_classes, cfg.mlp_hidden, cfg.mlp_epochs, seed)
                with torch.no_grad():
                    probs = torch.softmax(m(feats.test_x), dim=1)
                rows.append(ResultRow.of(method, "mlp", fraction, seed, n, score(probs, feats.test_y)))
            if "knn" in cfg.probes:
                probs = knn_probs(x, y, feats.test_x, num_classes, cfg.knn_k, cfg.knn_temperature)
                rows.append(ResultRow.of(method, "knn", fraction, seed, n, score(probs, feats.test_y),
                                         f"k={min(cfg.knn_k, n)}, T={cfg.knn_temperature:g}"))
    return rows


def num_classes_of(splits: Splits) -> int:
    """The number of classes of a dataset that has a labeled train split and a test split (else an error)."""
    if splits.test.images.shape[0] == 0 or splits.train.images.shape[0] == 0 or not splits.train.classes:
        raise ProbclrError("this dataset has no labeled train/test split to evaluate on (use train/ and test/ folders)")
    return len(splits.train.classes)


def check_fractions_possible(labels: torch.Tensor, fractions: tuple[float, ...]) -> None:
    for f in fractions:
        check_fraction(f)
    counts = torch.bincount(labels[labels >= 0])
    if (counts == 0).any():
        raise ProbclrError(f"class {int(torch.nonzero(counts == 0)[0])} has no labeled training images")


def finetune_rows(
    ckpt: Path, splits: Splits, cfg: EvalConfig, method: str, num_classes: int, run_cfg: Config,
) -> list[ResultRow]:
    """Semi-supervised fine-tuning: the pretrained encoder plus a linear layer, all trained on the labeled
    subset (encoder lr scaled by ``supervised.finetune_lr_scale``); reported apart from frozen probes."""
    from probclr.device import resolve_device
    from probclr.features import load_encoder
    from probclr.supervised import Classifier, predict, train_classifier

    device = resolve_device(run_cfg.run)
    rows = []
    for fraction in cfg.fractions:
        for seed in range(cfg.seeds):
            idx = label_subset(splits.train.labels, fraction, seed)
            encoder = load_encoder(ckpt)
            encoder.requires_grad_(True)
            torch.manual_seed(run_cfg.run.seed + 1000 * seed)
            model = Classifier(encoder, num_classes)
            model = train_classifier(run_cfg, model, splits.train.images[idx], splits.train.labels[idx], seed, device,
                                     encoder_lr_scale=run_cfg.supervised.finetune_lr_scale)
            s = score(predict(model, splits.test.images, device), splits.test.labels)
            rows.append(ResultRow.of(method, "finetune", fraction, seed, int(idx.numel()), s))
    return rows


def evaluate_run(
    run_dir: Path, cfg: EvalConfig | None = None, checkpoint: Path | None = None, data_dir: str | None = None,
    method: str = "simclr", command: list[str] | None = None, finetune: bool = False,
) -> tuple[list[ResultRow], Path]:
    """Extract (or reuse) features of ``checkpoint`` (default: the run's last) and run every probe."""
    run = RunDir(run_dir)
    ckpt = Path(checkpoint) if checkpoint else run.require_checkpoint()
    state = load_run_checkpoint(run, ckpt)
    run_cfg = config_from_checkpoint(state)
    cfg = cfg or run_cfg.eval
    data_cfg = run_cfg.data if data_dir is None else dataclasses.replace(run_cfg.data, data_dir=data_dir)
    t0 = time.perf_counter()
    splits = load_splits(data_cfg)
    num_classes = num_classes_of(splits)
    check_fractions_possible(splits.train.labels, cfg.fractions)
    feats = cached_features(run.root, ckpt, splits, cfg.batch_size)
    rows = probe_rows(feats, cfg, method, num_classes)
    if finetune:
        rows += finetune_rows(ckpt, splits, cfg, method, num_classes, run_cfg)
    meta = {
        "run_dir": str(run.root), "checkpoint": str(ckpt), "checkpoint_sha256": feats.checkpoint_sha256,
        "checkpoint_epoch": int(state.get("epoch", -1)), "eval_config": dataclasses.asdict(cfg),
        "run_config": state["config"], "provenance": provenance(torch.device("cpu"), command),
        "wall_s": time.perf_counter() - t0,
    }
    out = save_results(run.root / "eval" / ckpt.stem, rows, meta)
    return rows, out
