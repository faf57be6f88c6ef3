"""The whole story on the embedded digits: SimCLR pretraining, probes at label fractions, a random
encoder and the supervised baseline at the same fractions, one table and one figure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from analysis.reports.figures import accuracy_vs_fraction
from probclr.config import Config, merge
from probclr.eval.evaluate import evaluate_run
from probclr.eval.results import ResultRow, save_results
from probclr.eval.supervised import run_supervised
from probclr.run.rundir import RunDir
from probclr.train.pretrain import Progress, pretrain


class DemoResult(NamedTuple):
    """What the demo produced: result rows, the results file and the figure."""
    rows: list[ResultRow]
    results: Path
    figure: Path


def run_demo(
    cfg: Config, out: Path, on_progress: Callable[[Progress], None] | None = None,
    command: list[str] | None = None, log: Callable[[str], None] = lambda s: None,
) -> DemoResult:
    """The default job: pretrain, evaluate at every fraction, compare with random and supervised, draw the figure."""
    out = Path(out)
    log("1/4 SimCLR pretraining")
    pretrain(cfg, out / "simclr", resume=RunDir(out / "simclr").last.exists(),
             on_progress=on_progress, command=command)
    log("2/4 frozen-encoder probes at each label fraction")
    rows, _ = evaluate_run(out / "simclr", cfg.eval, method="simclr", command=command, log=log)
    log("3/4 the same probes on a randomly initialised encoder")
    random_cfg = merge(cfg, {"optim.epochs": 0})
    if not RunDir(out / "random").last.exists():
        pretrain(random_cfg, out / "random", command=command)
    rows += evaluate_run(out / "random", cfg.eval, method="random-init", command=command, log=log)[0]
    log("4/4 supervised baseline trained from scratch on each fraction")
    fractions, sup = cfg.eval.fractions, []
    for k, fraction in enumerate(fractions, 1):  # finished fractions are read back, not retrained
        log(f"    supervised: {cfg.eval.seeds} trainings at {100 * fraction:g} % labels ({k}/{len(fractions)})")
        sup = run_supervised(cfg, out / "supervised", fractions[:k], cfg.eval.seeds, command)[0]
    rows += sup
    results = save_results(out, rows, {"command": " ".join(command or []), "what": "probclr demo"})
    figure = accuracy_vs_fraction(rows, out / "accuracy_vs_fraction.png", "digits: SimCLR probe vs supervised")
    return DemoResult(rows, results, figure)
