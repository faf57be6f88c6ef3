"""One Markdown row per run of benchmarks/kappa_protocol.sh: the issue's measures of kappa and its free baselines.

    python benchmarks/summarise_kappa.py RUN_DIR...            # one row per run
    python benchmarks/summarise_kappa.py --seeds RUN_DIR...    # per method (runs METHOD-sSEED): seed-level means

Reads each run's analysis/ (test images, CIFAR-10H) and eval/last/results.csv. ``--seeds`` gives each measure's
mean over the pretraining seeds of a method with its 95 % t-interval (the issue's seed-level figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from scipy import stats

SCORES = ("kappa", "feature_norm", "proj_norm")


def tables(run: Path) -> dict[str, pd.Series]:
    """A run's measures by score: rho with -H_human, R-AUROC, crop rate; NLL at 1 % by probe; accuracy by fraction."""
    a = run / "analysis"
    ret = pd.read_csv(a / "retrieval.csv")
    crop = pd.read_csv(a / "ambiguity_per_image.csv")
    cal = pd.read_csv(a / "calibration.csv")
    ev = pd.read_csv(run / "eval" / "last" / "results.csv")
    return {"rho": pd.read_csv(a / "human_agreement.csv").set_index("score")["rho"],
            "R-AUROC": ret[ret.metric == "R-AUROC"].set_index("score")["value"],
            "crop": crop[crop.statistic == "less certain than the full image"].set_index("score")["value"],
            "nll1": cal[cal.fraction == 0.01].groupby("probe")["nll"].mean(),
            "acc": ev[ev.probe == "linear"].groupby("fraction")["accuracy"].mean() * 100}


def row(run: Path) -> str:
    """The Markdown row of one protocol run (its analysis/ and eval/ outputs)."""
    t = tables(run)

    def three(series: pd.Series, fmt: str) -> str:
        return " / ".join(format(series[s], fmt) if s in series.index else "–" for s in SCORES)

    nlls = " / ".join(f"{t['nll1'][p]:.3f}" if p in t["nll1"].index else "–"
                      for p in ("linear + temperature", "linear + kappa temperature", "Bayesian linear (Laplace)"))
    return (f"| {run.name} | {three(t['rho'], '+.3f')} | {three(t['R-AUROC'], '.3f')} | {three(t['crop'] * 100, '.1f')} |"
            f" {nlls} | {' / '.join(f'{v:.1f}' for v in t['acc'])} |")


def measures(run: Path) -> dict[str, float]:
    """The seed-level measures of one run: rho with -H_human, R-AUROC and crop rate per score, NLL at 1 %."""
    t = tables(run)
    out = {f"{name} {s}": float(t[name][s]) for name in ("rho", "R-AUROC", "crop") for s in SCORES
           if s in t[name].index}
    out |= {f"NLL 1 % {p}": float(t["nll1"][p]) for p in ("linear + temperature", "linear + kappa temperature")
            if p in t["nll1"].index}
    out |= {f"linear acc % {f:g}": float(v) for f, v in t["acc"].items()}
    return out


def seed_level(runs: list[Path]) -> None:
    """Per method: mean over seeds and 95 % t-interval of every measure."""
    by_method: dict[str, list[dict[str, float]]] = {}
    for r in runs:
        by_method.setdefault(r.name.rsplit("-s", 1)[0], []).append(measures(r))
    print("| method | seeds | measure | mean | 95 % interval |")
    print("|---|---|---|---|---|")
    for method, rows in by_method.items():
        for key in rows[0]:
            vals = pd.Series([r[key] for r in rows if key in r])
            half = stats.t.ppf(0.975, len(vals) - 1) * vals.std() / len(vals) ** 0.5 if len(vals) > 1 else float("nan")
            m = vals.mean()
            print(f"| {method} | {len(vals)} | {key} | {m:+.3f} | [{m - half:+.3f}, {m + half:+.3f}] |")


def main() -> None:
    """Print the header and one row per run directory given (``--seeds``: the seed-level table)."""
    if sys.argv[1:2] == ["--seeds"]:
        seed_level([Path(r) for r in sys.argv[2:]])
        return
    print("| run | ρ(·, −H human): κ / ‖h‖ / ‖proj‖ | R-AUROC: κ / ‖h‖ / ‖proj‖ | crop less certain %: κ / ‖h‖ / ‖proj‖"
          " | NLL at 1 %: temperature / κ temperature / Laplace | linear accuracy % 1 / 10 / 100 |")
    print("|---|---|---|---|---|---|")
    for r in sys.argv[1:]:
        print(row(Path(r)))


if __name__ == "__main__":
    main()
