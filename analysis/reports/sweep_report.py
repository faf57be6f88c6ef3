"""`probclr sweep report SWEEP_DIR`: one table (pandas) and one figure (seaborn) per sweep."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.measures.seed_summary import t_interval
from analysis.reports.render import plt, save_figure, sns
from analysis.reports.text import md_table, mean_pm
from probclr.errors import ProbclrError
from probclr.io import DamagedFileError, atomic_write_text, read_json


def sweep_frame(sweep_dir: Path) -> tuple[pd.DataFrame, dict]:
    """Long table: one line per (point, checkpoint epoch, probe, fraction, label seed) of finished points."""
    meta_path = sweep_dir / "sweep.json"
    if not meta_path.is_file():
        raise ProbclrError(f"{str(sweep_dir)!r} is not a sweep directory (no sweep.json); run `probclr sweep` first")
    meta = read_json(meta_path, "sweep record")
    if not isinstance(meta.get("points"), dict):
        raise DamagedFileError(f"sweep record {str(meta_path)!r} is damaged (no points)")
    records = []
    for name in meta["points"]:
        done = sweep_dir / "points" / name / "done.json"
        if done.is_file():
            rec = read_json(done, "finished sweep point")
            try:
                records += [{**{k.split(".")[-1]: v for k, v in rec["params"].items()}, "point": name,
                             "point_seed": rec["seed"], "kind": rec["kind"], "wall_s": rec["wall_s"], **row}
                            for row in rec["rows"]]
            except (KeyError, TypeError, AttributeError) as err:
                raise DamagedFileError(f"finished sweep point {str(done)!r} is damaged ({type(err).__name__});"
                                       " delete it to rerun that point") from err
    if not records:
        raise ProbclrError(f"sweep {str(sweep_dir)!r} has no finished point yet")
    df = pd.DataFrame(records)
    recorded = meta.get("spec", {}).get("split", "test")  # points written before rows named their split
    df["split"] = df["split"].fillna(recorded) if "split" in df else recorded
    for col in df.columns:  # list-valued parameters (e.g. a crop scale) become hashable labels
        if df[col].map(lambda v: isinstance(v, list)).any():
            df[col] = df[col].map(str)
    return df, meta


def _params(df: pd.DataFrame, meta: dict) -> list[str]:
    keys = set()
    for p in meta["points"].values():
        keys |= {k.split(".")[-1] for k in p["params"]}
    return [k for k in df.columns if k in keys]


def sweep_table(df: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Accuracy and ECE (%), mean ± std pooled over pretraining seeds × label subsets (n in the table)."""
    params = _params(df, meta)
    keys = [*params, "method", "probe", "epoch", "fraction", "split"]
    df = df.assign(epoch=df["epoch"].fillna(-1))  # supervised rows have no pretraining epoch
    g = df.groupby(keys, dropna=False)
    out = g.agg(seeds=("point_seed", "nunique"), n=("accuracy", "size")).reset_index()
    for col in ("accuracy", "ece"):
        out[f"{col} %"] = [mean_pm(a, b, 100) for a, b in zip(g[col].mean(), g[col].std(), strict=True)]
    out["epoch"] = [("" if e < 0 else int(e)) for e in out["epoch"]]
    return out


def sweep_figure(df: pd.DataFrame, meta: dict, path: Path) -> Path:
    """The sweep's figure: the study's score against each swept parameter."""
    sns.set_theme(style="whitegrid", context="paper")
    study = meta["spec"]["study"]
    params = _params(df, meta)
    shown_split = "test" if (df["split"] == "test").any() else "val"
    df = df[df["split"] == shown_split]
    d = df.assign(**{"accuracy %": 100 * df["accuracy"], "labels": [f"{100 * f:g} %" for f in df["fraction"]]})
    d["model"] = d["method"] + " / " + d["probe"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if study == "epochs":
        pre, sup = d[d["kind"] != "supervised"], d[d["kind"] == "supervised"]
        order = sorted(d["labels"].unique(), key=lambda t: float(t.split()[0]))
        palette = dict(zip(order, sns.color_palette(n_colors=len(order)), strict=True))
        sns.lineplot(data=pre, x="epoch", y="accuracy %", hue="labels", hue_order=order, palette=palette,
                     style="probe", marker="o", errorbar="sd", ax=ax)
        for labels, g in sup.groupby("labels"):  # the supervised reference on the same label subsets
            ax.axhline(g["accuracy %"].mean(), color=palette[labels], linestyle=":", linewidth=1.2)
        if len(sup):
            ax.plot([], [], color="grey", linestyle=":", label="supervised from scratch (same labels)")
            ax.legend(fontsize=7)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("pretraining epochs")
    elif not params:  # the label-fraction study: accuracy and calibration against the fraction
        plt.close(fig)
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        d["ECE %"] = 100 * d["ece"]
        sns.lineplot(data=d, x="fraction", y="accuracy %", hue="model", marker="o", errorbar="sd", ax=ax,
                     legend=False)
        sns.lineplot(data=d, x="fraction", y="ECE %", hue="model", marker="o", errorbar="sd", ax=ax2)
        for a in (ax, ax2):
            a.set_xscale("log")
            a.set_xlabel("fraction of labels")
        ax2.set_title("calibration (ECE, 15 bins)")
        sns.move_legend(ax2, "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    else:
        x = params[0] if len(params) == 1 else "point"
        if x == "point":
            d["point"] = d[params].astype(str).agg(", ".join, axis=1)
        d = d[d["probe"] != "knn"] if (d["probe"] != "knn").any() else d
        d["series"] = d["model"] + " @ " + d["labels"] + " labels"
        sns.pointplot(data=d, x=x, y="accuracy %", hue="series", errorbar="sd", ax=ax,
                      dodge=0.3 if d["series"].nunique() > 1 else False, linestyle="none")
        ax.tick_params(axis="x", rotation=60)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    split = "validation" if shown_split == "val" else "test"
    ax.set_title(f"{meta['spec']['name']}: {split} accuracy (mean ± sd)")
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    return save_figure(fig, path, dpi=130)


def best_on_validation(df: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Per probe and label fraction: the point (and epoch) with the best mean validation accuracy, and its test
    accuracy — the choice made on validation, the number reported from test. Empty unless both were scored."""
    pre = df[df["kind"] != "supervised"].assign(epoch=df["epoch"].fillna(-1))
    if not {"val", "test"} <= set(pre["split"]):
        return pd.DataFrame()
    keys = [*_params(pre, meta), "epoch"]
    rows = []
    for (probe, fraction), g in pre.groupby(["probe", "fraction"]):
        val = g[g["split"] == "val"]
        if val.empty:
            continue
        best = _best(val, keys)
        test = g[(g["split"] == "test") & (g[keys] == pd.Series(best, index=keys)).all(axis=1)]["accuracy"]
        chosen = val[(val[keys] == pd.Series(best, index=keys)).all(axis=1)]["accuracy"]
        rows.append({"probe": probe, "fraction": fraction, "best on validation": _point_name(keys, best),
                     "val accuracy %": mean_pm(chosen.mean(), chosen.std(), 100),
                     "test accuracy %": mean_pm(test.mean(), test.std(), 100) if len(test) else "not scored"})
    return pd.DataFrame(rows)


def _best(val: pd.DataFrame, keys: list[str]) -> tuple:
    """The point (its values of ``keys``) with the highest mean validation accuracy over all its rows (pretraining
    seeds x label subsets); the first in sweep order on a tie."""
    means = val.groupby(keys, dropna=False, sort=False)["accuracy"].mean()
    best = means.index[int(np.argmax(means.to_numpy()))]
    return best if isinstance(best, tuple) else (best,)  # one key: a plain index of scalars


def _point_name(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(keys, values, strict=True)
                     if not (k == "epoch" and v == -1))


def paired_against_best(df: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Per probe and label fraction, on validation: each point's accuracy minus the best point's, paired by
    pretraining seed (a seed's label subsets averaged first), as the mean and 95 % t-interval over the seeds
    both have — whether the best point is distinguishable from each other point, not only ahead of it."""
    pre = df[(df["kind"] != "supervised") & (df["split"] == "val")]
    if pre.empty:
        return pd.DataFrame()
    pre = pre.assign(epoch=pre["epoch"].fillna(-1))
    keys = [*_params(pre, meta), "epoch"]
    per_seed = pre.groupby([*keys, "probe", "fraction", "point_seed"], dropna=False)["accuracy"].mean().reset_index()
    rows = []
    for (probe, fraction), g in per_seed.groupby(["probe", "fraction"]):
        points = {k: sub.set_index("point_seed")["accuracy"] for k, sub in g.groupby(keys, dropna=False)}
        best = _best(pre[(pre["probe"] == probe) & (pre["fraction"] == fraction)], keys)  # the same choice as above
        for k, acc in points.items():
            if k == best:
                continue
            both = acc.index.intersection(points[best].index)
            m, lo, hi = t_interval(100 * (acc[both] - points[best][both]).to_numpy(dtype=np.float64))
            rows.append({"probe": probe, "fraction": fraction, "best on validation": _point_name(keys, best),
                         "point": _point_name(keys, k), "seeds": len(both),
                         "Δ val accuracy (points), 95 % CI": f"{m:+.2f}" + ("" if np.isnan(lo) else
                                                                            f" [{lo:+.2f}, {hi:+.2f}]")})
    return pd.DataFrame(rows)


def reproduce_commands(meta: dict) -> str:
    """The recorded sweep command with its output folder written as DIR, then the report command on DIR."""
    command = re.sub(r"--out\s+\S+", "--out DIR", meta.get("command", "probclr sweep --config CONFIG --out DIR"))
    return f"`{command}` then `probclr sweep report DIR`"


def sweep_report(sweep_dir: str | Path) -> tuple[Path, Path, Path]:
    """Writes ``table.csv``, ``table.md`` and ``figure.png`` into ``SWEEP/report``."""
    sweep_dir = Path(sweep_dir)
    df, meta = sweep_frame(sweep_dir)
    table = sweep_table(df, meta)
    out = sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.csv", table.to_csv(index=False))
    lines = [md_table(table)]
    best = best_on_validation(df, meta)
    if len(best):
        lines += ["", "## The best point, chosen on validation, scored on test", "", md_table(best)]
    paired = paired_against_best(df, meta)
    if len(paired):
        lines += ["", "## Every point against the best, paired by pretraining seed (validation)", "", md_table(paired)]
    wall = df.drop_duplicates("point")["wall_s"].sum()
    header = [f"# sweep `{meta['spec']['name']}`", "",
              f"Points finished: {df['point'].nunique()} of {len(meta['points'])}; wall time of finished points:"
              f" {wall / 60:.1f} min. Reproduce: {reproduce_commands(meta)}."
              " ± = std over pretraining seeds × label subsets (n rows).", ""]
    atomic_write_text(out / "table.md", "\n".join(header + lines) + "\n")
    fig = sweep_figure(df, meta, out / "figure.png")
    return out / "table.csv", out / "table.md", fig
