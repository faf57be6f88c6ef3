"""benchmarks/compare_to_seed_means.py against hand-computed intervals (scipy's t-tests as the reference)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_to_seed_means.py"
RUNS = {0: (0.600, 0.610), 1: (0.620, 0.640), 2: (0.590, 0.600)}  # pretraining seed -> accuracy of 2 label subsets
MEANS = np.array([58.0, 64.0, 60.0])  # the other method's seed means (%), seeds 0, 1, 2


def _results(tmp_path: Path) -> list[str]:
    paths = []
    for seed, accs in RUNS.items():
        rows = [{"method": "m", "probe": probe, "fraction": 0.1, "seed": ls, "n_labels": 10,
                 "accuracy": acc if probe == "linear" else 0.1, "nll": 1.0, "ece": 0.1, "brier": 0.5}
                for ls, acc in enumerate(accs) for probe in ("linear", "knn")]
        p = tmp_path / f"s{seed}" / "results.json"
        p.parent.mkdir()
        p.write_text(json.dumps({"rows": rows}))
        paths.append(str(p))
    return paths


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          cwd=SCRIPT.parents[1])


def _interval(line: str) -> tuple[float, float, float]:
    cell = line.split("|")[-2].replace("[", "").replace("]", "").replace(",", "")
    d, lo, hi = (float(x) for x in cell.split())
    return d, lo, hi


def test_paired_is_the_t_interval_of_the_per_seed_differences(tmp_path):
    res = _run("--paired", "--probe", "linear", *_results(tmp_path), "0.1=58,64,60")
    assert res.returncode == 0, res.stderr
    diffs = MEANS - np.array([100 * np.mean(a) for a in RUNS.values()])  # -2.5, +1.0, +0.5
    ref = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert _interval(res.stdout.splitlines()[-1]) == pytest.approx((diffs.mean(), ref.low, ref.high), abs=0.051)
    assert "| 3 | 3: 60.5 / 63.0 / 59.5 |" in res.stdout  # each seed's mean over its label subsets


def test_unpaired_is_welch_over_every_row(tmp_path):
    res = _run("--probe", "linear", *_results(tmp_path), "0.1=58,64,60")
    assert res.returncode == 0, res.stderr
    rows = np.array([100 * a for accs in RUNS.values() for a in accs])
    ref = stats.ttest_ind(MEANS, rows, equal_var=False).confidence_interval(0.95)
    d = MEANS.mean() - rows.mean()
    assert _interval(res.stdout.splitlines()[-1]) == pytest.approx((d, ref.low, ref.high), abs=0.051)
    assert "| 3 | 6 |" in res.stdout


@pytest.mark.parametrize("extra, message", [
    (["0.1=58,64"], "one results file per seed mean"),
    (["0.1=58,x,60"], "bad seed means '0.1=58,x,60'"),
    (["0.5=58,64,60"], "fraction 0.5"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, extra, message):
    res = _run("--paired", *_results(tmp_path), *extra)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_a_missing_results_file_is_named(tmp_path):
    res = _run(str(tmp_path / "nope.json"), "0.1=58,64,60")
    assert res.returncode == 2 and "nope.json" in res.stderr and "Traceback" not in res.stderr
