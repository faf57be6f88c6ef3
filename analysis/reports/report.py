"""`probclr report RUN [RUN ...]`: one self-contained HTML report (figures embedded) and a Markdown summary
comparing runs side by side, with the command, config and seeds behind every number."""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.measures.seed_summary import across_seeds, kappa_verdicts, run_measures
from analysis.reports.controlled_report import controlled_tables, is_controlled_study
from analysis.reports.figures import accuracy_vs_fraction, monitor_curves
from analysis.reports.text import md_table as _md_table
from analysis.reports.text import series_pm
from probclr.errors import ProbclrError
from probclr.eval.results import ResultRow, load_rows
from probclr.io import atomic_write_text, read_csv, read_json
from probclr.run.rundir import RunDir

FIGURES = [("reliability.png", "Reliability diagrams (label-subset seed 0)"),
           ("calibration.png", "ECE and NLL across label fractions"),
           ("uncertainty.png", "Misclassification AUROC of each certainty score"),
           ("ambiguity.png", "Certainty against crop area and CIFAR-10-C-style corruption severity"),
           ("embedding_map.png", "Embedding map of test images")]


# the columns each analysis table must have for the report (a damaged table is one line, not a KeyError)
TABLE_COLUMNS = {"calibration": ("fraction", "probe", "seed", "labels", "accuracy", "ece", "nll", "brier"),
                 "uncertainty": ("fraction", "score", "seed", "auroc", "aurc"),
                 "ambiguity": ("factor", "score", "rho", "low", "high", "n"), "retrieval": ("metric", "score", "value")}


class RunInfo:
    """What a run directory holds for the report: evaluation rows, analysis tables, provenance."""

    def __init__(self, root: Path) -> None:
        self.root = root
        run = RunDir(root)
        if not root.is_dir():
            raise ProbclrError(f"run directory {str(root)!r} does not exist")
        # a pretraining run's test results, or a supervised run's (its results.json sits at the top)
        results = [p for p in (run.results_path(), root / "results.json") if p.is_file()]
        self.results = results[0] if results else None
        self.analysis = run.analysis_dir() if (run.analysis_dir() / "analysis.json").is_file() else None
        if self.results is None and self.analysis is None:
            raise ProbclrError(
                f"{str(root)!r} has neither evaluation results nor an analysis: run `probclr evaluate --run {root}`"
                f" and/or `probclr analyze --run {root}` first"
            )
        self.meta: dict[str, Any] = read_json(self.results, "results file") if self.results else {}
        self.rows: list[ResultRow] = load_rows(self.results) if self.results else []
        self.name = root.name
        prov = run.provenance_path
        record = read_json(prov, "provenance file") if prov.is_file() else {}
        self.command = str(record.get("command", ""))
        # positives drawn from soft labels: labels used in pretraining (probclr.data.pairs)
        self.soft_labels = str(record.get("soft_labels_sha256", ""))
        self.analysis_meta = read_json(self.analysis / "analysis.json", "analysis record") if self.analysis else {}

    def monitor(self) -> list[tuple[int, float]]:
        """(epoch, kNN validation accuracy) of every monitored epoch in metrics.jsonl."""
        path = RunDir(self.root).metrics_path
        points = []
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("knn_val_acc"), int | float):
                points.append((int(row.get("epoch", len(points) + 1)), float(row["knn_val_acc"])))
        return points

    def table(self, name: str) -> pd.DataFrame | None:
        if self.analysis is None or not (self.analysis / f"{name}.csv").is_file():
            return None
        return read_csv(self.analysis / f"{name}.csv", "analysis table", TABLE_COLUMNS.get(name, ()))


def unique_names(paths: list[Path]) -> list[str]:
    """The shortest trailing path of each run that no other run shares (``a/s0`` and ``b/s0``, not ``s0``
    twice); the same folder given twice is refused."""
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) < len(resolved):
        dup = next(p for p in paths if resolved.count(p.resolve()) > 1)
        raise ProbclrError(f"run directory {str(dup)!r} is given twice")
    parts = [r.parts for r in resolved]
    names = []
    for i, own in enumerate(parts):
        for depth in range(1, len(own) + 1):
            tail = own[-depth:]
            if all(other[-depth:] != tail for j, other in enumerate(parts) if j != i):
                names.append("/".join(tail))
                break
    return names


def accuracy_table(runs: list[RunInfo]) -> pd.DataFrame:
    """Accuracy per run, method, probe and fraction, mean ± std over label seeds."""
    rows = []
    for r in runs:
        for row in r.rows:
            rows.append({"run": r.name, "method": row.method, "probe": row.probe, "fraction": row.fraction,
                         "accuracy": row.accuracy})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    g = df.groupby(["run", "method", "probe", "fraction"])["accuracy"].apply(lambda s: series_pm(s, 100)).reset_index()
    t = g.pivot(index=["run", "method", "probe"], columns="fraction", values="accuracy")
    t.columns = [f"{100 * c:g} % labels" for c in t.columns]
    return t.reset_index()


def calibration_table(cal: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, ECE, NLL and Brier per fraction and probe, mean ± std over label seeds."""
    g = cal.groupby(["fraction", "probe"], sort=False)
    out = g.agg(seeds=("seed", "nunique"), labels=("labels", "first")).reset_index()
    for col, scale, digits, label in (("accuracy", 100, 1, "accuracy %"), ("ece", 100, 1, "ECE %"),
                                      ("nll", 1, 3, "NLL"), ("brier", 1, 3, "Brier")):
        out[label] = g[col].apply(lambda s, sc=scale, dg=digits: series_pm(s, sc, dg)).to_numpy()
    out["fraction"] = [f"{100 * f:g} %" for f in out["fraction"]]
    return out


def uncertainty_table(unc: pd.DataFrame) -> pd.DataFrame:
    """Misclassification AUROC and AURC per fraction and certainty score, mean ± std over label seeds."""
    g = unc.groupby(["fraction", "score"], sort=False)
    out = g.agg(seeds=("seed", "nunique")).reset_index()
    out["AUROC"] = g["auroc"].apply(lambda s: series_pm(s, 1, 3)).to_numpy()
    out["AURC"] = g["aurc"].apply(lambda s: series_pm(s, 1, 3)).to_numpy()
    out["fraction"] = [f"{100 * f:g} %" for f in out["fraction"]]
    return out


def kappa_verdict(unc: pd.DataFrame) -> str:
    """A plain sentence: does kappa beat every deterministic certainty score on misclassification AUROC?"""
    if "kappa" not in set(unc["score"]):
        return "This run has no probabilistic head (no κ); only deterministic certainty scores are compared."
    lines = []
    for f, d in unc.groupby("fraction"):
        means = d.groupby("score")["auroc"].mean()
        others = means.drop("kappa").dropna()
        if others.empty or pd.isna(means["kappa"]):  # every image right (or wrong): AUROC undefined
            lines.append(f"at {100 * f:g} % labels misclassification AUROC is undefined (no error, or no correct"
                         " prediction, among the evaluated images)")
            continue
        best_other = others.idxmax()
        k, o = means["kappa"], means[best_other]
        verdict = "beats" if k > o else "does NOT beat"
        lines.append(f"at {100 * f:g} % labels κ {verdict} every deterministic score on misclassification AUROC"
                     f" (κ {k:.3f} vs best baseline {best_other} {o:.3f})")
    return "; ".join(lines) + "."


def ambiguity_table(amb: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlations of certainty with each ambiguity factor, with their 95 % intervals."""
    out = amb.copy()
    out["Spearman ρ [95 % CI]"] = [f"{r:+.3f} [{lo:+.3f}, {hi:+.3f}]" for r, lo, hi in zip(out["rho"], out["low"],
                                                                                              out["high"], strict=True)]
    return out[["factor", "score", "Spearman ρ [95 % CI]", "n"]]


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="t", escape=True)


CSS = """body{font-family:Georgia,serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;border-bottom:2px solid #333}h2{margin-top:2em;border-bottom:1px solid #aaa}h3{margin-bottom:.3em}
table.t{border-collapse:collapse;font-size:.85em;margin:.6em 0;display:block;overflow-x:auto;max-width:100%}
table.t th,table.t td{padding:.25em .7em;text-align:right}
table.t th{border-bottom:1px solid #333}table.t tr:nth-child(even){background:#f4f4f4}
img{max-width:100%;margin:.4em 0}figure.small img{max-width:620px}
code,pre{font-size:.82em;background:#f6f6f6}pre{padding:.6em;overflow-x:auto}
.note{color:#555;font-size:.9em}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}"""


def seed_section(runs: list[RunInfo]) -> tuple[list[str], list[str]]:
    """Analysis measures across pretraining seeds (runs grouped by loss), with kappa's verdicts; empty when
    no loss has two analysed runs."""
    analysed = [r for r in runs if r.analysis is not None]
    group_of = {r.name: str(r.analysis_meta.get("loss", "?")) for r in analysed}
    if not analysed or max(list(group_of.values()).count(g) for g in group_of.values()) < 2:
        return [], []
    measures = {r.name: run_measures(r.analysis) for r in analysed if r.analysis}
    summary = across_seeds(measures, group_of)
    t = summary.assign(**{"mean [95 % CI over runs]": [
        f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" for m, lo, hi in zip(summary["mean"], summary["low"], summary["high"],
                                                                  strict=True)]})[
        ["group", "measure", "score", "runs", "mean [95 % CI over runs]"]]
    verdicts = kappa_verdicts(measures, group_of)
    items = "".join(f"<li>{html.escape(v)}</li>" for v in verdicts)
    h = ["<h2>Across pretraining seeds</h2><p class='note'>One value per run (pretraining seed); mean and 95 %"
         " t-interval over runs of the same loss; κ's verdicts are paired within each run.</p>",
         f"<ul>{items}</ul>", _html_table(t)]
    md = ["## Across pretraining seeds (mean [95 % t-interval] over runs)", "", *[f"- {v}" for v in verdicts], "",
          _md_table(t), ""]
    return h, md


def _dataset(run: RunInfo) -> str | None:
    cfg = run.meta.get("run_config") or run.meta.get("config") or {}
    data = cfg.get("data") if isinstance(cfg, dict) else None
    return str(data.get("dataset")) if isinstance(data, dict) and data.get("dataset") else None


def _check_one_dataset(runs: list[RunInfo]) -> None:
    """One report compares runs of one dataset: accuracies of digits and CIFAR-10 in one table mean nothing."""
    by: dict[str, list[str]] = {}
    for r in runs:
        d = _dataset(r)
        if d is not None:
            by.setdefault(d, []).append(r.name)
    if len(by) > 1:
        shown = "; ".join(f"{d}: {', '.join(names[:3])}" for d, names in by.items())
        raise ProbclrError(f"the runs come from different datasets ({shown}); report each dataset separately")


def controlled_section(study: Path, out: Path) -> tuple[list[str], list[str]]:
    """A ``probclr controlled`` directory: its tables and its figure (named relative to ``out``)."""
    per, paired, what = controlled_tables(study)
    name = os.path.relpath(study, out)
    h = [f"<h2>Controlled study <code>{html.escape(name)}</code></h2><p class='note'>{html.escape(what)}.</p>"]
    md = [f"## Controlled study `{name}`", "", what + ".", ""]
    for t in (per, paired):
        if not t.empty:
            h.append(_html_table(t))
            md += [_md_table(t), ""]
    fig = study / "kappa_vs_true.png"
    if fig.is_file():
        h.append(f"<figure>{_img(fig)}<figcaption>Estimated certainty against the true κ* (lowest seed)."
                 "</figcaption></figure>")
    return h, md


class Page:
    """The report being written: its HTML and Markdown lines and the next section number (none skipped)."""

    def __init__(self) -> None:
        self.h: list[str] = []
        self.md: list[str] = []
        self.n = 0

    def section(self, html_title: str, md_title: str) -> None:
        self.n += 1
        self.h.append(f"<h2>{self.n}. {html_title}</h2>")
        self.md += [f"## {self.n}. {md_title}", ""]

    def add(self, h: list[str], md: list[str]) -> None:
        self.h += h
        self.md += md


def write_report(run_dirs: list[Path], out: Path, command: str, title: str = "probclr report") -> tuple[Path, Path]:
    """Write ``out/report.html`` and ``out/summary.md``; returns their paths."""
    studies, runs = _inputs(run_dirs)  # 1. the runs and controlled studies, checked
    out.mkdir(parents=True, exist_ok=True)
    page = Page()
    _head(page, title, command)  # 2. title and provenance line
    _accuracy(page, runs, out)  # 3. accuracy across label fractions, all runs
    _monitor(page, runs, out)  # 4. the kNN monitor curves
    page.add(*seed_section(runs))  # 5. measures over pretraining seeds, with kappa's verdicts
    for run in runs:  # 6. one section per run
        _run_section(page, run)
    for study in studies:  # 7. controlled studies
        page.add(*controlled_section(study, out))
    page.h.append("</body></html>")
    html_path, md_path = out / "report.html", out / "summary.md"  # 8. written atomically
    atomic_write_text(html_path, "\n".join(page.h))
    atomic_write_text(md_path, "\n".join(page.md) + "\n")
    return html_path, md_path


def _inputs(run_dirs: list[Path]) -> tuple[list[Path], list[RunInfo]]:
    if not run_dirs:
        raise ProbclrError("report needs at least one run directory")
    studies = [Path(r) for r in run_dirs if is_controlled_study(Path(r))]  # `probclr controlled` directories
    runs = [RunInfo(Path(r)) for r in run_dirs if not is_controlled_study(Path(r))]
    for run, name in zip(runs, unique_names([r.root for r in runs]), strict=True):
        run.name = name  # two runs are never merged because their folders share a name
    _check_one_dataset(runs)
    return studies, runs


def _head(page: Page, title: str, command: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page.h += [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
               f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
               f"<p class='note'>Generated {stamp} by <code>{html.escape(command)}</code>. Every number below is on"
               " the held-out test set; temperatures and hyper-parameters were fitted on held-out labeled data only."
               " ± is the standard deviation over label-subset seeds.</p>"]
    page.md += [f"# {html.escape(title)}", "",  # a title is text, never markup, in either file
                f"Generated {stamp} by `{command}`. Test-set numbers; ± = std over label-subset seeds.", ""]


def _accuracy(page: Page, runs: list[RunInfo], out: Path) -> None:
    acc = accuracy_table(runs)
    if acc.empty:
        return
    fig = accuracy_vs_fraction([r for run in runs for r in run.rows], out / "accuracy_vs_fraction.png",
                               "test accuracy vs labels")
    page.section("Accuracy across label fractions", "Accuracy across label fractions")
    page.add([_html_table(acc), f"<figure class='small'>{_img(fig)}<figcaption>Test accuracy (mean ± sd over label"
              " subsets).</figcaption></figure>"], [_md_table(acc), ""])


def _monitor(page: Page, runs: list[RunInfo], out: Path) -> None:
    curves = {r.name: r.monitor() for r in runs if r.monitor()}
    if not curves:
        return
    fig = monitor_curves(curves, out / "monitor.png")
    page.section("Pretraining: kNN monitor on the validation split", "Pretraining: kNN monitor on the validation split")
    page.add([f"<figure class='small'>{_img(fig)}<figcaption>kNN top-1 (k = 20) of validation images against a"
              " labeled bank, per epoch (never the test set).</figcaption></figure>"],
             ["![kNN monitor](monitor.png)", ""])


def _run_section(page: Page, run: RunInfo) -> None:
    page.section(f"Run <code>{html.escape(run.name)}</code>", f"Run `{run.name}`")
    if run.soft_labels:
        note = (f"Positives drawn from soft labels (data.pairs soft_labels, file sha256 {run.soft_labels[:12]}): this"
                " run used labels in pretraining; compare it apart from the label-free runs.")
        page.add([f"<p class='note'>{html.escape(note)}</p>"], [note, ""])
    if run.analysis is None:
        where = os.path.relpath(run.root)  # relative to where the report is made, never this machine's absolute path
        page.add([f"<p class='note'>No analysis: run <code>probclr embed --run {html.escape(where)}</code>"
                  f" and <code>probclr analyze --run {html.escape(where)}</code>.</p>"],
                 [f"No analysis (run `probclr embed` and `probclr analyze --run {where}`).", ""])
    for name, make in RUN_TABLES:
        frame = run.table(name)
        if frame is not None:
            page.add(*make(frame))
    if run.analysis is not None:
        for fname, caption in FIGURES:
            p = run.analysis / "figures" / fname
            if p.is_file():
                page.h.append(f"<figure>{_img(p)}<figcaption>{html.escape(caption)}.</figcaption></figure>")
    page.add(*_reproduce(run))


def _calibration_block(cal: pd.DataFrame) -> tuple[list[str], list[str]]:
    t = calibration_table(cal)
    return ["<h3>Calibration across label fractions</h3>", _html_table(t)], ["### Calibration", "", _md_table(t), ""]


def _uncertainty_block(unc: pd.DataFrame) -> tuple[list[str], list[str]]:
    t, verdict = uncertainty_table(unc), kappa_verdict(unc)
    return (["<h3>Uncertainty quality (misclassification of the linear probe)</h3>", f"<p>{html.escape(verdict)}</p>",
             _html_table(t)], ["### Uncertainty quality", "", verdict, "", _md_table(t), ""])


def _ambiguity_block(amb: pd.DataFrame) -> tuple[list[str], list[str]]:
    t = ambiguity_table(amb)
    return (["<h3>Certainty vs ambiguity</h3><p class='note'>Expected: ρ > 0 with crop area, ρ < 0 with corruption"
             " severity. CIFAR-10-C-style corruptions (seeded re-implementation, not CIFAR-10-C); intervals are"
             " cluster-bootstrap over images.</p>", _html_table(t)],
            ["### Certainty vs ambiguity (ρ > 0 with crop area and < 0 with severity expected)", "", _md_table(t), ""])


def _retrieval_block(ret: pd.DataFrame) -> tuple[list[str], list[str]]:
    t = ret.fillna("").assign(value=[f"{v:.3f}" for v in ret["value"]])
    return (["<h3>Retrieval in the embedding space</h3><p class='note'>Recall@1 and MAP@R of the test images against"
             " each other; R-AUROC: how well each label-free certainty predicts that an image's nearest neighbour has"
             " its class (0.5 = chance).</p>", _html_table(t)],
            ["### Retrieval (Recall@1, MAP@R; R-AUROC of label-free certainties)", "", _md_table(t), ""])


def _human_block(hum: pd.DataFrame) -> tuple[list[str], list[str]]:
    return (["<h3>Agreement with human uncertainty (CIFAR-10H)</h3>", _html_table(hum)],
            ["### Agreement with CIFAR-10H (Spearman with −human entropy)", "", _md_table(hum), ""])


RUN_TABLES = (("calibration", _calibration_block), ("uncertainty", _uncertainty_block),
              ("ambiguity", _ambiguity_block), ("retrieval", _retrieval_block), ("human_agreement", _human_block))


def _reproduce(run: RunInfo) -> tuple[list[str], list[str]]:
    cmds = [c for c in (run.command, run.meta.get("provenance", {}).get("command", ""),
                        run.analysis_meta.get("provenance", {}).get("command", "")) if c]
    sha = run.meta.get("provenance", {}).get("git_sha") or run.analysis_meta.get("provenance", {}).get("git_sha")
    cfg = run.meta.get("run_config") or {}
    digest = run.meta.get("checkpoint_sha256") or run.analysis_meta.get("checkpoint_sha256")
    h = ["<h3>Reproduce</h3><pre>", *(html.escape(c) for c in cmds), "</pre>",
         f"<p class='note'>git {html.escape(str(sha))}; checkpoint sha256 {html.escape(str(digest))};"
         f" config: <code>{html.escape(json.dumps(cfg, sort_keys=True)[:1500])}</code></p>"]
    return h, ["### Reproduce", "", "```", *cmds, "```", ""]
