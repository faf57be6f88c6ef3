"""Real images whose ambiguity is known: CIFAR-10 images blended two by two, with soft labels.

The image-side positive control of ``data.pairs: soft_labels`` (docs/soft_label_pairs.md). Each image of a
class a is blended with an image of another class b: x = lam * x_a + (1 - lam) * x_b with soft label
lam * e_a + (1 - lam) * e_b; a share of the images stays unblended (lam = 1, unanimous, as 44 % of
CIFAR-10H is). Pretraining draws each anchor's positive from these soft labels; the test images are blended
the same way from the CIFAR-10 *test* images, so that whether a certainty score ranks the known ambiguity
-H(soft label) is measured on images no run has seen.

    python benchmarks/mixed_ambiguity.py build --data ../shared/data/cifar10-jpeg --out DIR [--train 5000]
    python benchmarks/mixed_ambiguity.py score RUN... --mixed DIR [--split val|test] [--json OUT]
    python benchmarks/mixed_ambiguity.py summary OUT_DIR [--split test]     (after mixed_ambiguity.sh)
    python benchmarks/mixed_ambiguity.py figure OUT_DIR --mixed DIR --png FILE  (certainty by ambiguity level)

``build`` writes DIR/{train,val,test}/<class>/*.png (train and val from disjoint CIFAR-10 training images,
test from the test images), DIR/soft_labels.npy (one row per training image in the sorted order probclr
reads the folder) and DIR/{train,val,test}_truth.npy. ``score`` prints, per run, Spearman of each label-free
certainty (kappa, ||proj||, ||h||) with -H(soft label) on the blended images of ``--split`` (val: for
choices; test: for the reported number), which no run trains on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from analysis.measures.seed_summary import t_interval
from probclr.data.folders import list_image_folder, read_image_folder
from probclr.eval.embeddings import embed_images
from probclr.eval.frozen_model import load_model

UNANIMOUS = 0.4  # share of images left unblended (lam = 1)
LAM_RANGE = (0.5, 0.95)  # lam of a blended image, uniform


def blend_folder(paths: list[Path], pools: list[np.ndarray], out: Path, seed: int) -> None:
    """Every image of ``pools`` (per class: rows of ``paths``) blended with an image of another class of the
    same pools, written as PNG to ``out/<class>/``; the soft labels, in the order probclr lists the folder, to
    ``out/../<out.name>_truth.npy``."""
    rng = np.random.default_rng(seed)
    classes = sorted({p.parent.name for p in paths})
    made: dict[Path, np.ndarray] = {}
    for k, name in enumerate(classes):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(pools[k]):
            other = int(rng.choice([c for c in range(len(classes)) if c != k]))
            partner = int(rng.choice(pools[other]))
            lam = 1.0 if rng.random() < UNANIMOUS else float(rng.uniform(*LAM_RANGE))
            x_a = np.asarray(Image.open(paths[row]).convert("RGB"), dtype=np.float64)  # (H, W, 3)
            x_b = np.asarray(Image.open(paths[partner]).convert("RGB"), dtype=np.float64)
            x = np.clip(np.rint(lam * x_a + (1 - lam) * x_b), 0, 255).astype(np.uint8)
            file = out / name / f"{i:05d}.png"
            Image.fromarray(x).save(file)
            made[file] = np.zeros(len(classes))
            made[file][k] += lam
            made[file][other] += 1 - lam
    files, _, _ = list_image_folder(out)  # the order probclr reads the folder in
    np.save(out.parent / f"{out.name}_truth.npy", np.stack([made[f] for f in files]))


# --mode classes: images unchanged; a class pair (a, b, alpha) gives every image of a the soft label
# (1 - alpha) e_a + alpha e_b (and b the mirror): ambiguity a property of what the image shows, not of how it
# looks (no blend to see). cat/dog 0.5, automobile/truck 0.4, deer/horse 0.3, airplane/ship 0.2, bird/frog 0.
CLASS_PAIRS = ((3, 5, 0.5), (1, 9, 0.4), (4, 7, 0.3), (0, 8, 0.2), (2, 6, 0.0))


def class_soft_label(k: int, classes: int) -> np.ndarray:
    """The soft label of every image of class ``k`` under :data:`CLASS_PAIRS`."""
    p = np.zeros(classes)
    for a, b, alpha in CLASS_PAIRS:
        if k in (a, b):
            p[k] += 1 - alpha
            p[b if k == a else a] += alpha
    return p


def copy_folder(paths: list[Path], pools: list[np.ndarray], out: Path) -> None:
    """The images of ``pools`` as they are (PNG, like the blended ones), soft labels by :data:`CLASS_PAIRS`."""
    classes = sorted({p.parent.name for p in paths})
    for k, name in enumerate(classes):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(pools[k]):
            Image.open(paths[row]).convert("RGB").save(out / name / f"{i:05d}.png")
    files, labels, _ = list_image_folder(out)
    np.save(out.parent / f"{out.name}_truth.npy", np.stack([class_soft_label(k, len(classes)) for k in labels]))


def pools_of(labels: np.ndarray, sizes: list[int], seed: int) -> list[list[np.ndarray]]:
    """Disjoint per-class pools of rows: ``sizes[s] // 10`` images of each class for each part s."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in sizes]
    for k in range(int(labels.max()) + 1):
        rows = rng.permutation(np.flatnonzero(labels == k))
        start = 0
        for s, size in enumerate(sizes):
            parts[s].append(rows[start:start + size // 10])
            start += size // 10
    return parts


def build(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists():
        sys.exit(f"error: {str(out)!r} exists; give a new folder")
    data = Path(args.data)
    paths, labels, _ = list_image_folder(data / "train")
    train, val = pools_of(np.asarray(labels), [args.train, args.val], seed=0)
    test_paths, test_labels, _ = list_image_folder(data / "test")
    (test,) = pools_of(np.asarray(test_labels), [args.test], seed=3)
    if args.mode == "classes":
        for part, pool, src in (("train", train, paths), ("val", val, paths), ("test", test, test_paths)):
            copy_folder(src, pool, out / part)
    else:
        blend_folder(paths, train, out / "train", seed=1)
        blend_folder(paths, val, out / "val", seed=2)
        blend_folder(test_paths, test, out / "test", seed=4)
    np.save(out / "soft_labels.npy", np.load(out / "train_truth.npy"))
    print(f"wrote {out}: {args.train} training, {args.val} validation and {args.test} test images, soft_labels.npy")


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``p`` (N, C)."""
    q = np.where(p > 0, p, 1.0)
    return -(p * np.log(q)).sum(axis=1)


def score(args: argparse.Namespace) -> None:
    rows = []
    for run in map(Path, args.runs):
        mixed = Path(args.mixed)
        images, truth = read_image_folder(mixed / args.split, None).images, np.load(mixed / f"{args.split}_truth.npy")
        e = embed_images(load_model(run / "checkpoints" / "last.pt"), images)
        certainty = -entropy(truth)
        blended = truth.max(axis=1) < 1  # the degree of ambiguity among the blended images alone
        row: dict[str, object] = {"run": run.name, "split": args.split, "images": int(images.shape[0]),
                                  "blended": int(blended.sum())}
        for name, s in e.label_free().items():
            row[f"spearman_{name}"] = float(spearmanr(s.numpy(), certainty).statistic)
            row[f"blended_{name}"] = float(spearmanr(s.numpy()[blended], certainty[blended]).statistic)
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


SCORES = {"kappa": "κ", "feature_norm": "‖h‖", "proj_norm": "‖proj‖"}


def _scores(out: Path, split: str, prefix: str) -> dict[tuple[str, int], dict[str, float]]:
    """{(method, seed): {score: Spearman}} from every run folder ``METHOD-sSEED`` of ``out``; ``prefix``
    spearman (all images) or blended (the blended images alone)."""
    found = {}
    for f in sorted(out.glob(f"*-s*/scores-{split}.json")):
        method, seed = f.parent.name.rsplit("-s", 1)
        row = json.loads(f.read_text())[0]
        found[(method, int(seed))] = {k: row[f"{prefix}_{k}"] for k in SCORES if f"{prefix}_{k}" in row}
    return found


def _ci(values: list[float]) -> str:
    v = np.asarray(values)
    if v.size < 2:
        return f"{v.mean():+.3f} (n = {v.size})"
    lo, hi = t_interval(v)[1:]
    return f"{v.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"


def summary(args: argparse.Namespace) -> None:
    """Markdown: each method's scores (mean and 95 % t-interval over seeds), then kappa of prob-soft minus
    every other score, paired by seed."""
    for prefix, which in (("spearman", "all"), ("blended", "the ambiguous (not unanimous)")):
        _summary_of(_scores(Path(args.out), args.split, prefix), f"{which} {args.split} images")


def _summary_of(found: dict[tuple[str, int], dict[str, float]], images: str) -> None:
    methods = sorted({m for m, _ in found})
    print(f"\nSpearman with -H(soft label), {images}, mean [95 % t-interval] over seeds\n")
    print("| method | seeds | " + " | ".join(SCORES.values()) + " |\n|---|---|" + "---|" * len(SCORES))
    for m in methods:
        seeds = sorted(s for mm, s in found if mm == m)
        cells = [_ci([found[(m, s)][k] for s in seeds]) if k in found[(m, seeds[0])] else "—" for k in SCORES]
        print(f"| {m} | {len(seeds)} | " + " | ".join(cells) + " |")
    ref = [(m, s) for m, s in found if m == "prob-soft"]
    print("\nPaired by seed: κ of prob-soft minus\n\n| score | difference [95 % t-interval] |\n|---|---|")
    for m in methods:
        for k, name in SCORES.items():
            if (m, k) == ("prob-soft", "kappa"):
                continue
            pairs = [(found[r]["kappa"], found[(m, r[1])][k]) for r in ref if (m, r[1]) in found
                     and k in found[(m, r[1])]]
            if pairs:
                print(f"| {name} of {m} | {_ci([a - b for a, b in pairs])} (seeds: {len(pairs)}) |")


FIGURE_LINES = (("prob-soft", "kappa", "κ, soft-label pairs"), ("shrink-soft", "kappa", "κ, shrinkage, soft pairs"),
                ("prob-aug", "kappa", "κ, augmentation pairs"), ("prob-soft", "feature_norm", "‖h‖, soft pairs"),
                ("simclr-soft", "feature_norm", "‖h‖ of NT-Xent, soft pairs"))


def figure(args: argparse.Namespace) -> None:
    """Mean percentile rank of each certainty among the test images, by ambiguity level (H of the soft label,
    five levels), averaged over the seeds' runs: a score that follows the ambiguity falls from left to right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import rankdata

    mixed, out = Path(args.mixed), Path(args.out)
    images, truth = read_image_folder(mixed / "test", None).images, np.load(mixed / "test_truth.npy")
    h = entropy(truth)
    edges = np.quantile(h[h > 1e-9], [0.25, 0.5, 0.75]) if len(np.unique(h)) > 5 else np.unique(h)[1:-1] + 1e-9
    level = np.digitize(h, np.concatenate([[1e-9], edges]))  # 0 = unanimous, then up to four levels of H
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, score, label in FIGURE_LINES:
        runs = sorted(out.glob(f"{method}-s*"))
        if not runs:
            continue
        curves = []
        for run in runs:
            s = embed_images(load_model(run / "checkpoints" / "last.pt"), images).label_free()[score].numpy()
            pct = rankdata(s) / len(s)
            curves.append([pct[level == k].mean() for k in range(level.max() + 1)])
        ax.plot(range(level.max() + 1), np.mean(curves, axis=0), marker="o", label=f"{label} ({len(runs)} seeds)")
    ax.set_xlabel("ambiguity level of a test image (0 = unanimous; then rising H)")
    ax.set_xticks(range(level.max() + 1))
    ax.set_title(f"{mixed.name}: {len(h)} test images", fontsize=9)
    ax.set_ylabel("mean percentile of the certainty")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"figure: {args.png}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--data", required=True, help="CIFAR-10 as image folders (train/, test/)")
    b.add_argument("--out", required=True)
    b.add_argument("--mode", choices=("blend", "classes"), default="blend",
                   help="blend: blended images, soft labels by the blend; classes: images as they are, soft labels"
                        " by class pair")
    b.add_argument("--train", type=int, default=5000)
    b.add_argument("--val", type=int, default=2000)
    b.add_argument("--test", type=int, default=2000)
    s = sub.add_parser("score")
    s.add_argument("runs", nargs="+")
    s.add_argument("--mixed", required=True)
    s.add_argument("--split", choices=("val", "test"), default="val")
    s.add_argument("--json")
    m = sub.add_parser("summary")
    m.add_argument("out")
    m.add_argument("--split", choices=("val", "test"), default="test")
    f = sub.add_parser("figure")
    f.add_argument("out")
    f.add_argument("--mixed", required=True)
    f.add_argument("--png", required=True)
    args = p.parse_args()
    {"build": build, "score": score, "summary": summary, "figure": figure}[args.cmd](args)


if __name__ == "__main__":
    main()
