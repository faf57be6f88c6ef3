"""Summarise the kappa-variant pilots (benchmarks/kappa_variants.sh) into the Markdown table of BENCHMARKS §6.

    python benchmarks/summarise_variants.py runs/variants

Every number is on the 5,000 validation images (never test): the linear probe at 10 % labels
(``eval/last/val/results.json``), Recall@1 in mu-space and the R-AUROC of each label-free score
(``analysis-val/retrieval.csv``), the centre-crop rate and the Spearman with the centre-crop side
(``analysis-val/ambiguity*.csv``), the partial Spearman of kappa with "the nearest neighbour has my class"
given each free norm (from the validation embeddings), and kappa's 10/50/90 % quantiles over the last epoch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from analysis.measures.retrieval import retrieval
from analysis.measures.uncertainty import partial_spearman
from probclr.eval.embeddings import load_run_embeddings
from probclr.run.rundir import RunDir


def _partials(run: Path) -> dict[str, float]:
    """What kappa knows beyond the free norms about retrieval on val: partial Spearman of kappa with "the
    nearest neighbour (mu-space) has my class" given ||h||, and given ||proj||."""
    rd = RunDir(run)
    val = load_run_embeddings(rd, rd.require_checkpoint()).split("val")
    names = ("partial(kappa, NN ok | ||h||)", "partial(kappa, NN ok | ||proj||)")
    if val.kappa is None:
        return dict.fromkeys(names, float("nan"))
    ok = retrieval(val.mu, val.labels).nn_correct.double()
    free = val.label_free()
    return {names[0]: partial_spearman(free["kappa"], ok, free["feature_norm"]),
            names[1]: partial_spearman(free["kappa"], ok, free["proj_norm"])}


def _row(run: Path) -> dict[str, object] | None:
    meta = run / "analysis-val" / "analysis.json"
    if not meta.is_file() or "skipped" in json.loads(meta.read_text()):
        return None
    res = json.loads((run / "eval" / "last" / "val" / "results.json").read_text())
    linear = [r["accuracy"] for r in res["rows"] if r["probe"] == "linear" and r["fraction"] == 0.1]
    ret = pd.read_csv(run / "analysis-val" / "retrieval.csv")
    amb = pd.read_csv(run / "analysis-val" / "ambiguity.csv")
    per = pd.read_csv(run / "analysis-val" / "ambiguity_per_image.csv")
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])

    def first(values: pd.Series) -> float:
        return float(values.iloc[0]) if len(values) else float("nan")  # nan: no such score (NT-Xent has no kappa)

    def rauroc(score: str) -> float:
        return first(ret[(ret.metric == "R-AUROC") & (ret.score == score)].value)

    def centre(score: str) -> tuple[float, float]:
        rho = amb[(amb.score == score) & (amb.factor == "centre crop side")].rho
        rate = per[(per.score == score) & (per.factor == "centre crop side")
                   & (per.statistic == "less certain than the full image")].value
        return first(rho), first(rate)

    k_rho, k_rate = centre("kappa")
    partial = _partials(run)
    h_rho, h_rate = centre("feature_norm")
    p_rho, p_rate = centre("proj_norm")
    return {
        "variant": run.name, "val linear 10 %": 100 * sum(linear) / len(linear),
        "R@1": float(ret[ret.metric == "Recall@1"].value.iloc[0]),
        "R-AUROC kappa": rauroc("kappa"), "R-AUROC ||h||": rauroc("feature_norm"), "R-AUROC ||proj||": rauroc("proj_norm"),
        "kappa: centre crop less certain": k_rate, "||h||: same": h_rate, "||proj||: same": p_rate,
        "Spearman(kappa, side)": k_rho, "Spearman(||h||, side)": h_rho, "Spearman(||proj||, side)": p_rho,
        **partial,
        "kappa q10/50/90": (f"{last['kappa_q10']:,.0f} / {last['kappa_q50']:,.0f} / {last['kappa_q90']:,.0f}"
                            if "kappa_q10" in last else "—"),
    }


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/variants")
    rows = [r for run in sorted(p for p in root.iterdir() if p.is_dir()) if (r := _row(run)) is not None]
    cols = list(rows[0]) if rows else []
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
