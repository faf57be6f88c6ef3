"""benchmarks/summarise_recipe.py: the search table's means and paired changes, against hand-made runs."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "summarise_recipe.py"


def _module():
    spec = importlib.util.spec_from_file_location("summarise_recipe", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(root: Path, name: str, acc: tuple[float, float, float], epoch_s: tuple[float, ...] = (10.0, 20.0)) -> None:
    run = root / name
    (run / "eval" / "last" / "val").mkdir(parents=True)
    rows = [{"probe": "linear", "fraction": f, "accuracy": a} for f, a in zip((0.01, 0.1, 1.0), acc, strict=True)]
    rows.append({"probe": "knn", "fraction": 0.1, "accuracy": 0.99})  # not a linear row: ignored
    (run / "eval" / "last" / "val" / "results.json").write_text(json.dumps({"rows": rows}))
    lines = [{"epoch": i + 1, "loss": 3.0 - i, "epoch_s": s} for i, s in enumerate(epoch_s)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in [{"step": 1, "loss": 9.0}, *lines]))


def test_means_over_seeds_and_changes_paired_by_seed(tmp_path):
    _run(tmp_path, "base-s0", (0.40, 0.50, 0.60))
    _run(tmp_path, "base-s1", (0.42, 0.52, 0.62))
    _run(tmp_path, "wide-s1", (0.45, 0.50, 0.70), epoch_s=(30.0,))
    (tmp_path / "unfinished-s0").mkdir()  # no results yet: left out
    table = _module().table(tmp_path).set_index("candidate")
    assert list(table.index) == ["base", "wide"]
    assert table.loc["base", "val 1 %"] == pytest.approx(41.0)
    assert table.loc["base", "seeds"] == "0,1" and table.loc["base", "s/epoch"] == pytest.approx(15.0)
    assert table.loc["base", "loss"] == pytest.approx(2.0)  # the last epoch's loss
    # wide has seed 1 only: its change is against base's seed 1 (42, 52, 62), not base's mean
    assert table.loc["wide", "Δ 1 %"] == pytest.approx(3.0)
    assert table.loc["wide", "Δ 10 %"] == pytest.approx(-2.0)
    assert table.loc["wide", "Δ 100 %"] == pytest.approx(8.0)


def test_recipe_choice_refuses_a_missing_config_before_anything_runs(tmp_path):
    """benchmarks/recipe_choice.sh: a config file that is not there is one line and exit code 2."""
    import subprocess

    script = SCRIPT.parent / "recipe_choice.sh"
    res = subprocess.run(["bash", str(script), str(tmp_path / "out"), "0", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == f"no config file {tmp_path / 'nope.yaml'}"
    assert not list((tmp_path / "out").iterdir())  # its log is not started
    res = subprocess.run(["bash", str(script), str(tmp_path / "out"), "0"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "give at least one CONFIG" in res.stderr
