"""`probclr analyze`: calibration across label fractions, uncertainty quality, certainty vs ambiguity,
human-label agreement and embedding maps of one run, written to ``RUN/analysis/``."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from analysis.measures.ambiguity import ambiguity_analysis
from analysis.measures.bayes_probe import BayesianProbe, heldout_posterior_scale
from analysis.measures.calibration import heldout_temperature, holdout_refit, reliability
from analysis.measures.embedding_maps import MIN_MAP_POINTS, check_map_methods, embedding_map
from analysis.measures.human_labels import align, human_entropy, load_cifar10h
from analysis.measures.kappa_probe import heldout_kappa_temperature
from analysis.measures.retrieval import r_auroc, retrieval
from analysis.measures.uncertainty import auroc_or_nan, baseline_certainties, partial_spearman, risk_coverage, spearman_ci
from analysis.reports import figures
from probclr.config import Config, merge
from probclr.data.fractions import label_subset
from probclr.data.sources import cifar10_test_in_original_order, load_splits
from probclr.errors import ProbclrError
from probclr.eval.embeddings import Embeddings, RunEmbeddings, load_run_embeddings
from probclr.eval.frozen_model import load_model
from probclr.io import atomic_write_json, atomic_write_text, staged_dir
from probclr.probes.knn import train_knn_probe
from probclr.probes.linear import LinearProbe, train_linear_probe
from probclr.probes.metrics import score
from probclr.provenance import provenance
from probclr.run.rundir import RunDir, config_from_checkpoint, load_run_checkpoint


def _csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def probe_analysis(
    emb: RunEmbeddings, cfg: Config, seeds: int, split: str = "test"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, LinearProbe]:
    """Per fraction and label seed: plain / temperature-scaled / Bayesian linear probe scores on ``split``
    (test or val), reliability data (seed 0), and the misclassification AUROC / AURC of every certainty score."""
    pool, evaluated = emb.split("train"), emb.split(split)
    tx, ty, vx, vy = pool.h, pool.labels, evaluated.h, evaluated.labels
    num_classes = len(emb.classes)
    ev = cfg.eval
    cal, rel, unc = [], [], []
    probe_for_ambiguity: LinearProbe | None = None
    for fraction in ev.fractions:
        # at 100 % every seed draws the same labeled set: one probe, not `seeds` copies of it
        for seed in range(seeds if fraction < 1 else 1):
            idx = label_subset(ty, fraction, seed)
            x, y = tx[idx], ty[idx]
            t0 = time.perf_counter()
            probe = train_linear_probe(x, y, num_classes, ev.weight_decays, ev.holdout, seed, ev.max_iter, ev.probe_tol)
            refit = holdout_refit(x, y, num_classes, probe, ev.holdout, seed, ev.max_iter)  # shared by the choices
            temp = heldout_temperature(x, y, num_classes, probe, ev.holdout, seed, refit=refit)
            t1 = time.perf_counter()
            scale = heldout_posterior_scale(x, y, num_classes, probe, ev.holdout, seed, refit=refit)
            bayes = BayesianProbe(x, y, num_classes, probe, scale)
            t2 = time.perf_counter()
            logits = probe.logits(vx.float())
            variants = {"linear": torch.softmax(logits, 1), "linear + temperature": torch.softmax(logits / temp, 1),
                        "Bayesian linear (Laplace)": bayes.probs(vx, seed=seed)}
            if pool.kappa is not None and evaluated.kappa is not None:  # the kappa-aware probe: T_i from kappa_i
                kt = heldout_kappa_temperature(x, y, pool.kappa[idx], num_classes, probe, ev.holdout, seed,
                                               refit=refit)
                variants["linear + kappa temperature"] = kt.probs(logits, evaluated.kappa)
            for name, probs in variants.items():
                s = score(probs, vy)
                cal.append({"probe": name, "fraction": fraction, "seed": seed, "labels": int(idx.numel()),
                            "accuracy": s.accuracy, "nll": s.nll, "ece": s.ece, "brier": s.brier,
                            "temperature": temp if "temperature" in name else float("nan"),
                            "posterior_scale": scale if name.startswith("Bayesian") else float("nan"),
                            "fit_s": (t1 - t0) if name != "Bayesian linear (Laplace)" else t2 - t1})
                if seed == 0:
                    r = reliability(probs, vy)
                    r["probe"], r["fraction"] = name, fraction
                    rel.append(r)
            probs = variants["linear"]
            error = (probs.argmax(1) != vy).numpy()
            knn = train_knn_probe(x, y, num_classes, ev.knn_k, ev.knn_max_share, ev.knn_temperature).probs(vx)
            label_free = evaluated.label_free()  # kappa first, when there is one
            scores = {**({"kappa": label_free.pop("kappa")} if "kappa" in label_free else {}),
                      **baseline_certainties(probs), **label_free,
                      "knn_agreement": knn.gather(1, probs.argmax(1, keepdim=True)).squeeze(1).double()}
            for name, c in scores.items():
                unc.append({"score": name, "fraction": fraction, "seed": seed, "error_rate": float(error.mean()),
                            "auroc": auroc_or_nan(-c, error), "aurc": risk_coverage(c, error).aurc})
            if seed == 0 and fraction == max(ev.fractions):
                probe_for_ambiguity = probe
    # seeds >= 1 is checked where the count is read (analyze, config validation), so seed 0 of the largest
    # fraction always ran
    assert probe_for_ambiguity is not None
    return pd.DataFrame(cal), pd.concat(rel, ignore_index=True), pd.DataFrame(unc), probe_for_ambiguity


def human_table(
    human: Tensor, label_free: dict[str, Tensor], label_using: dict[str, Tensor] | None = None
) -> pd.DataFrame:
    """Certainty against human ambiguity (CIFAR-10H): Spearman with -H(human soft label) and its 95 % CI, the
    AUROC of low certainty for "the annotators were not unanimous", and kappa's partial Spearman given ||h||
    and given ||proj||.
    Scores that needed labels (a probe's) are marked apart from the label-free ones."""
    entropy = human_entropy(human)  # (N,)
    split = entropy > 1e-9  # not unanimous
    rows = []
    scores = {**label_free, **(label_using or {})}
    for name, s in scores.items():
        c = spearman_ci(s, -entropy)
        rows.append({"score": name, "uses_labels": name not in label_free, "rho": c.rho, "low": c.low,
                     "high": c.high, "n": c.n, "auroc_not_unanimous": auroc_or_nan(-s, split)})
    for given in ("feature_norm", "proj_norm"):  # what kappa adds once each free norm is known
        if "kappa" in scores and given in scores:
            rows.append({"score": f"kappa | {given} (partial)", "uses_labels": False, "n": int(entropy.numel()),
                         "rho": partial_spearman(scores["kappa"], -entropy, scores[given])})
    return pd.DataFrame(rows)


def label_using_scores(emb: RunEmbeddings, cfg: Config, probe: LinearProbe, split: str) -> dict[str, Tensor]:
    """The certainties that need labels, from the probes on all labels: max-softmax and negative entropy of
    the linear probe, and the kNN probe's agreement with the linear probe's class."""
    pool, evaluated = emb.split("train"), emb.split(split)
    probs = probe.probs(evaluated.h.float())
    ev = cfg.eval
    knn = train_knn_probe(pool.h, pool.labels, len(emb.classes), ev.knn_k,
                          ev.knn_max_share, ev.knn_temperature).probs(evaluated.h)
    agreement = knn.gather(1, probs.argmax(1, keepdim=True)).squeeze(1).double()
    return {**baseline_certainties(probs), "knn_agreement": agreement}


def retrieval_table(evaluated: Embeddings) -> pd.DataFrame:
    """Recall@1 and MAP@R in mu-space, and the R-AUROC of every label-free certainty score."""
    r = retrieval(evaluated.mu, evaluated.labels)
    rows = [{"metric": "Recall@1", "score": "", "value": r.recall_at_1},
            {"metric": "MAP@R", "score": "", "value": r.map_at_r}]
    rows += [{"metric": "R-AUROC", "score": name, "value": r_auroc(s, r.nn_correct)}
             for name, s in evaluated.label_free().items()]
    return pd.DataFrame(rows)


def analyze_run(
    run_dir: str | Path, command: list[str], cifar10h: str | None = None, cifar10h_order: str | None = None,
    seeds: int | None = None, ambiguity_images: int = 10000, map_points: int = 2000,
    data_dir: str | None = None, eval_updates: dict[str, Any] | None = None, split: str = "test",
    maps: tuple[str, ...] = ("tsne",),
) -> Path:
    """Everything of the uncertainty analysis for one run; returns ``RUN/analysis`` (``RUN/analysis-val`` for
    the validation split, which is what variants are chosen on). ``eval_updates`` ({"eval.key": value})
    change the probes' settings from the run's own. ``maps``: the 2-D maps drawn (:data:`MAP_METHODS`), each of
    the same seeded subset of images."""
    start = time.perf_counter()
    check_map_methods(maps)
    if split not in ("test", "val"):
        raise ProbclrError(f"unknown split {split!r}; valid: test, val")
    if seeds is not None and seeds < 1:
        raise ProbclrError(f"--seeds must be >= 1 (label subsets per fraction), got {seeds}")
    if split == "val" and cifar10h is not None:
        raise ProbclrError("CIFAR-10H labels the test images: --cifar10h goes with --split test")
    run = RunDir(run_dir)
    ckpt = run.require_checkpoint()
    cfg = config_from_checkpoint(load_run_checkpoint(run, ckpt))
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=data_dir))
    if eval_updates:
        cfg = merge(cfg, eval_updates)
    emb = load_run_embeddings(run, ckpt)
    if split not in emb.splits:
        raise ProbclrError(f"the embeddings of {str(run.root)!r} hold no {split} split (data.val_size 0?)")
    human = None
    if cifar10h is not None:  # validate before the long work
        human = align(load_cifar10h(cifar10h), emb.split("test").labels, cifar10_test_in_original_order(cfg.data),
                      cifar10h_order)
    final = run.analysis_dir(split)
    with staged_dir(final) as out:  # all of the new analysis, or the old one untouched
        (out / "figures").mkdir()
        _analyze_into(out, run, ckpt, cfg, emb, human, command, cifar10h, seeds, ambiguity_images, map_points, start,
                      split, maps)
    return final


def _analyze_into(
    out: Path, run: RunDir, ckpt: Path, cfg: Config, emb: RunEmbeddings, human: Tensor | None, command: list[str],
    cifar10h: str | None, seeds: int | None, ambiguity_images: int, map_points: int, start: float, split: str,
    maps: tuple[str, ...] = ("tsne",),
) -> None:
    timings: dict[str, float] = {}

    t = time.perf_counter()
    cal, rel, unc, best_probe = probe_analysis(emb, cfg, seeds or cfg.eval.seeds, split)
    timings["probes_s"] = time.perf_counter() - t
    for name, df in (("calibration", cal), ("reliability", rel), ("uncertainty", unc)):
        _csv(df, out / f"{name}.csv")

    t = time.perf_counter()
    n_amb = _ambiguity_into(out, ckpt, cfg, split, ambiguity_images, best_probe)
    timings["ambiguity_s"] = time.perf_counter() - t

    evaluated = emb.split(split)
    label_free = evaluated.label_free()
    t = time.perf_counter()
    _csv(retrieval_table(evaluated), out / "retrieval.csv")
    timings["retrieval_s"] = time.perf_counter() - t
    if human is not None:
        _csv(human_table(human, label_free, label_using_scores(emb, cfg, best_probe, split)),
             out / "human_agreement.csv")

    t = time.perf_counter()
    n_map, skipped = _maps_into(out, evaluated, emb.classes, maps, map_points)
    timings["maps_s"] = time.perf_counter() - t

    t = time.perf_counter()
    figures.analysis_figures(out)
    timings["figures_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    atomic_write_json(out / "analysis.json", {
        "run": str(run.root), "checkpoint": str(ckpt), "checkpoint_sha256": emb.checkpoint_sha256,
        "loss": cfg.loss.name, "split": split, "seeds": seeds or cfg.eval.seeds, "fractions": list(cfg.eval.fractions),
        "ambiguity_images": n_amb, "map_points": n_map,
        "cifar10h": cifar10h, "timings": timings, "skipped": skipped,
        "provenance": provenance(torch.device("cpu"), command),
    })


def _ambiguity_into(out: Path, ckpt: Path, cfg: Config, split: str, images: int, best_probe: LinearProbe) -> int:
    """Crops, centre crops and corruptions of a seeded subset of the evaluated split's images, scored by every
    uncertainty (``ambiguity*.csv``); returns how many images were used."""
    model = load_model(ckpt)
    splits = load_splits(cfg.data)
    test_images = (splits.test if split == "test" else splits.val).images  # type: ignore[union-attr]
    n_amb = min(images, test_images.shape[0])
    pick = torch.randperm(test_images.shape[0], generator=torch.Generator().manual_seed(0))[:n_amb]

    def probe(features: Tensor) -> Tensor:
        return best_probe.probs(features.float())

    amb = ambiguity_analysis(model, test_images[pick], seed=0, probe=probe)
    _csv(amb.correlations, out / "ambiguity.csv")
    _csv(amb.by_level, out / "ambiguity_levels.csv")
    _csv(amb.per_image, out / "ambiguity_per_image.csv")
    return n_amb


def _maps_into(out: Path, evaluated: Embeddings, classes: list[str], maps: tuple[str, ...], points: int,
               ) -> tuple[int, dict[str, str]]:
    """2-D maps of h (t-SNE, UMAP) of a seeded subset, by class and κ (``embedding_map.csv``); returns the
    number of images shown and what was skipped (too few images for a map: said, the rest goes on)."""
    sel = torch.randperm(evaluated.h.shape[0], generator=torch.Generator().manual_seed(0))[:points]
    shown = evaluated.take(sel)
    skipped: dict[str, str] = {}
    if sel.numel() < MIN_MAP_POINTS:
        skipped["embedding maps"] = f"{sel.numel()} images, fewer than the {MIN_MAP_POINTS} a map needs"
    frames = []
    for method in ([] if skipped else maps):
        xy = embedding_map(shown.h, method)
        df = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "method": method,
                           "class": [classes[i] for i in shown.labels.tolist()]})
        if shown.kappa is not None:
            df["kappa"] = shown.kappa.numpy()
        frames.append(df)
    if frames:
        _csv(pd.concat(frames, ignore_index=True), out / "embedding_map.csv")
    return int(sel.numel()), skipped
