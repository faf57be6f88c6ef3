"""One Markdown row per run of benchmarks/kappa_protocol.sh: the issue's measures of kappa and its free baselines.

    python benchmarks/summarise_kappa.py RUN_DIR...

Reads each run's analysis/ (test images, CIFAR-10H) and eval/last/results.csv; `probclr report` gives the
seed-level means and intervals of the same measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

SCORES = ("kappa", "feature_norm", "proj_norm")


def row(run: Path) -> str:
    """The Markdown row of one protocol run (its analysis/ and eval/ outputs)."""
    a = run / "analysis"
    hum = pd.read_csv(a / "human_agreement.csv").set_index("score")
    ret = pd.read_csv(a / "retrieval.csv")
    rauc = ret[ret.metric == "R-AUROC"].set_index("score")["value"]
    crop = pd.read_csv(a / "ambiguity_per_image.csv")
    crop = crop[crop.statistic == "less certain than the full image"].set_index("score")["value"]
    cal = pd.read_csv(a / "calibration.csv")
    nll1 = cal[cal.fraction == 0.01].groupby("probe")["nll"].mean()
    ev = pd.read_csv(run / "eval" / "last" / "results.csv")
    acc = ev[ev.probe == "linear"].groupby("fraction")["accuracy"].mean() * 100

    def three(series: pd.Series, fmt: str) -> str:
        return " / ".join(format(series[s], fmt) if s in series.index else "–" for s in SCORES)

    nlls = " / ".join(f"{nll1[p]:.3f}" if p in nll1.index else "–"
                      for p in ("linear + temperature", "linear + kappa temperature", "Bayesian linear (Laplace)"))
    return (f"| {run.name} | {three(hum['rho'], '+.3f')} | {three(rauc, '.3f')} | {three(crop * 100, '.1f')} |"
            f" {nlls} | {' / '.join(f'{v:.1f}' for v in acc)} |")


def main() -> None:
    """Print the header and one row per run directory given."""
    print("| run | ρ(·, −H human): κ / ‖h‖ / ‖proj‖ | R-AUROC: κ / ‖h‖ / ‖proj‖ | crop less certain %: κ / ‖h‖ / ‖proj‖"
          " | NLL at 1 %: temperature / κ temperature / Laplace | linear accuracy % 1 / 10 / 100 |")
    print("|---|---|---|---|---|---|")
    for r in sys.argv[1:]:
        print(row(Path(r)))


if __name__ == "__main__":
    main()
