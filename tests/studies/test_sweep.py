import json
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from probclr.config import load_config
from probclr.errors import ConfigError, ProbclrError
from studies.sweep import expand, load_spec, run_sweep

runner = CliRunner()
TINY = {"model.convnet_widths": [8, 16], "optim.warmup_epochs": 0, "model.proj_dim": 16, "optim.epochs": 1,
        "optim.batch_size": 64, "eval.fractions": [0.5], "eval.seeds": 1, "eval.probes": ["knn"],
        "supervised.steps": 3}


def write(tmp_path, name="s.yaml", **spec):
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"set": TINY, **spec}))
    return p


def test_grid_and_variants_expand_to_named_points(tmp_path):
    spec = load_spec(write(tmp_path, grid={"augment.strength": [0.25, 0.5]}, seeds=[0, 1],
                           variants={"crop": {"augment.color_jitter": False}, "all": {}}))
    points = expand(spec)
    assert len(points) == 2 * 2 * 2
    names = {p.name for p in points}
    assert "variant=crop,strength=0.25,seed=1" in names
    crop = next(p for p in points if p.name.startswith("variant=crop,strength=0.5,seed=0"))
    assert crop.cfg.augment.color_jitter is False and crop.cfg.augment.strength == 0.5 and crop.cfg.run.seed == 0


@pytest.mark.parametrize("spec, match", [
    ({"grid": {"augment.strenght": [0.5]}}, "strenght"),
    ({"grid": {}}, "grid is empty"),
    ({"grid": {"optim.lr": []}}, "'optim.lr' needs a non-empty list"),
    ({"grid": {"optim.batch_size": ["big"]}}, "optim.batch_size"),
    ({"seeds": []}, "seeds"),
    ({"colour": 1}, "unknown sweep key 'colour'"),
    ({"variants": {"v": {"augment.nope": 1}}}, "variant 'v'"),
    ({"split": "train"}, "sweep split must be one of val, test, both, got .train."),
])
def test_bad_sweep_configs_name_the_problem(tmp_path, spec, match):
    with pytest.raises(ConfigError, match=match):
        expand(load_spec(write(tmp_path, **spec)))


def test_real_tiny_sweep_end_to_end_resumes_and_refuses_other_configs(tmp_path):
    cfg = write(tmp_path, grid={"augment.strength": [0.25, 0.5]}, supervised=True)
    out = tmp_path / "sw"
    recs = run_sweep(cfg, out, ["probclr", "sweep"])
    assert len(recs) == 4 and {r["kind"] for r in recs} == {"pretrain", "supervised"}
    # a sweep chooses: its points are scored on the validation split, never the test set (unless split: test)
    assert list(out.glob("points/*/eval/last/val/results.json")) and not list(out.glob("points/*/eval/last/results.json"))
    sup = json.loads(next(out.glob("points/supervised*/results.json")).read_text())
    assert sup["split"] == "val"
    done = sorted(out.glob("points/*/done.json"))
    stamps = [p.stat().st_mtime_ns for p in done]
    time.sleep(0.01)
    run_sweep(cfg, out, ["probclr", "sweep"])  # everything finished: nothing retrained or rewritten
    assert [p.stat().st_mtime_ns for p in done] == stamps
    other = write(tmp_path, "other.yaml", grid={"augment.strength": [0.25, 0.5]}, supervised=True,
                  set={**TINY, "optim.epochs": 2})
    with pytest.raises(ProbclrError, match="different config.*optim.epochs"):
        run_sweep(other, out, ["probclr", "sweep"])
    assert [p.stat().st_mtime_ns for p in done] == stamps
    # more seeds grow a finished sweep: only the new seed's points run; fewer seeds are another sweep
    for seeds in ([0, 1], [1]):  # the same sweep name (s), in a folder of its own
        (tmp_path / str(seeds[0])).mkdir()
        write(tmp_path / str(seeds[0]), grid={"augment.strength": [0.25, 0.5]}, supervised=True, seeds=seeds)
    assert len(run_sweep(tmp_path / "0" / "s.yaml", out, ["probclr", "sweep"])) == 8
    assert [p.stat().st_mtime_ns for p in done] == stamps
    with pytest.raises(ProbclrError, match="differs in seeds"):
        run_sweep(tmp_path / "1" / "s.yaml", out, ["probclr", "sweep"])
    res = runner.invoke(app, ["sweep", "report", str(out)])
    assert res.exit_code == 0, res.output
    table = (out / "report" / "table.csv").read_text()
    assert "strength" in table and "supervised" in table and (out / "report" / "figure.png").stat().st_size > 1000


def test_sweep_resumes_after_a_kill(tmp_path):
    cfg = write(tmp_path, grid={"augment.strength": [0.25, 0.5, 1.0]}, set={**TINY, "optim.epochs": 2})
    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "cli.main", "sweep", "--config", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("points/*/done.json")):
        time.sleep(0.05)
    proc.kill()  # SIGKILL once the first point has finished, mid-way through the rest
    proc.wait()
    first = sorted(out.glob("points/*/done.json"))
    assert first, "the first point never finished"
    before = {p: p.stat().st_mtime_ns for p in first}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{len(first)} already finished" in res.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # finished points untouched
    assert len(list(out.glob("points/*/done.json"))) == 3


def test_sweep_report_aggregates_fake_runs(tmp_path):
    from analysis.reports.sweep_report import sweep_frame, sweep_table

    out = tmp_path / "fake"
    points = {}
    for s in (0, 1):
        for lr in (0.1, 0.2):
            name = f"lr={lr},seed={s}"
            points[name] = {"kind": "pretrain", "params": {"optim.lr": lr}, "config": {}}
            rows = [{"method": "simclr", "probe": "linear", "fraction": 0.1, "seed": ls, "n_labels": 10,
                     "accuracy": 0.5 + lr + 0.01 * s + 0.001 * ls, "nll": 1.0, "ece": 0.1, "brier": 0.5,
                     "detail": "", "epoch": 5} for ls in (0, 1)]
            (out / "points" / name).mkdir(parents=True)
            (out / "points" / name / "done.json").write_text(json.dumps(
                {"point": name, "kind": "pretrain", "params": {"optim.lr": lr}, "seed": s, "wall_s": 1.0,
                 "rows": rows}))
    (out / "sweep.json").write_text(json.dumps({"spec": {"name": "fake", "study": "generic"}, "points": points}))
    df, meta = sweep_frame(out)
    t = sweep_table(df, meta)
    row = t[t["lr"] == 0.2].iloc[0]
    # 4 rows: 0.700, 0.701, 0.710, 0.711 -> mean 70.55 %, std 0.58 % (pooled over seeds x label subsets)
    assert row["accuracy %"] in ("70.5 ± 0.6", "70.6 ± 0.6")
    assert row["seeds"] == 2 and row["n"] == 4


def test_sweep_cli_bad_input(tmp_path):
    res = runner.invoke(app, ["sweep", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["sweep", "report", str(tmp_path)])
    assert res.exit_code == 2 and "not a sweep directory" in res.output
    res = runner.invoke(app, ["sweep"])
    assert res.exit_code == 2 and "--config" in res.output


def test_sweep_report_label_fraction_layout(tmp_path):
    from analysis.reports.sweep_report import sweep_report

    out = tmp_path / "lf"
    points = {}
    for kind, method, probe in (("pretrain", "simclr", "linear"), ("supervised", "supervised", "end-to-end")):
        name = f"{kind},seed=0"
        points[name] = {"kind": kind, "params": {}, "config": {}}
        rows = [{"method": method, "probe": probe, "fraction": f, "seed": 0, "n_labels": 10, "accuracy": 0.5 + f / 4,
                 "nll": 1.0, "ece": 0.1 - f / 20, "brier": 0.5, "detail": "", "epoch": 15 if kind == "pretrain" else None}
                for f in (0.01, 0.1, 1.0)]
        (out / "points" / name).mkdir(parents=True)
        (out / "points" / name / "done.json").write_text(json.dumps(
            {"point": name, "kind": kind, "params": {}, "seed": 0, "wall_s": 2.0, "rows": rows}))
    (out / "sweep.json").write_text(json.dumps({"spec": {"name": "lf", "study": "generic"}, "points": points}))
    csv, md, fig = sweep_report(out)
    assert "supervised" in csv.read_text() and "Points finished: 2 of 2" in md.read_text()
    assert fig.stat().st_size > 1000


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a/b", "..", "with space"])
def test_a_sweep_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name):
    spec = tmp_path / "named.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "set": TINY, "grid": {"augment.strength": [0.5]}}))
    with pytest.raises(ConfigError, match="plain folder name"):
        load_spec(spec)
    assert not (tmp_path / "runs").exists()


def test_a_fraction_given_twice_is_refused(tmp_path):
    from clihelp import bad

    bad(["supervised", "--fraction", "0.1", "--fraction", "0.1", "--out", str(tmp_path / "s")], "gives a fraction twice")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="eval.fractions gives a fraction twice"):
        load_config(None, ["eval.fractions=[0.5, 0.1, 0.5]"])


def test_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    spec = load_spec(write(tmp_path, grid={"optim.lr": [0.001 * (i + 1) for i in range(1000)],
                                           "optim.weight_decay": [1e-6 * (i + 1) for i in range(1000)]}))
    with pytest.raises(ConfigError, match="1,000,000 points"):  # counted, never built
        expand(spec)


def _fake_point(out, name, kind, params, seed, rows):
    (out / "points" / name).mkdir(parents=True)
    (out / "points" / name / "done.json").write_text(json.dumps(
        {"point": name, "kind": kind, "params": params, "seed": seed, "wall_s": 1.0, "rows": rows}))


def test_the_best_point_is_chosen_on_validation_and_reported_on_test(tmp_path):
    from analysis.reports.sweep_report import best_on_validation, sweep_frame, sweep_report

    out, points = tmp_path / "both", {}
    # lr 0.2 wins on validation, lr 0.1 on test: the report must name lr 0.2 and give its test accuracy
    acc = {(0.1, "val"): 0.50, (0.1, "test"): 0.70, (0.2, "val"): 0.60, (0.2, "test"): 0.55}
    for s in (0, 1):
        for lr in (0.1, 0.2):
            name = f"lr={lr},seed={s}"
            points[name] = {"kind": "pretrain", "params": {"optim.lr": lr}, "config": {}}
            rows = [{"method": "simclr", "probe": "linear", "fraction": 0.1, "seed": 0, "n_labels": 10,
                     "accuracy": acc[lr, split] + 0.01 * s, "nll": 1.0, "ece": 0.1, "brier": 0.5, "detail": "",
                     "epoch": 4, "split": split} for split in ("val", "test")]
            _fake_point(out, name, "pretrain", {"optim.lr": lr}, s, rows)
    (out / "sweep.json").write_text(json.dumps(
        {"spec": {"name": "both", "study": "generic", "split": "both"}, "points": points}))
    best = best_on_validation(*sweep_frame(out))
    assert len(best) == 1
    row = best.iloc[0]
    assert row["best on validation"] == "lr=0.2, epoch=4"
    assert row["val accuracy %"] == "60.5 ± 0.7" and row["test accuracy %"] == "55.5 ± 0.7"
    _, md, _ = sweep_report(out)
    assert "chosen on validation, scored on test" in md.read_text()


def test_points_are_compared_with_the_best_paired_by_pretraining_seed(tmp_path):
    """Seeds shift every point alike by 5 points (unpaired, the points overlap); paired by seed, lr 0.2 is
    1.6 points below lr 0.1 with the t-interval of its three per-seed differences, lr 0.4 exactly 10 below."""
    from scipy import stats

    from analysis.reports.sweep_report import paired_against_best, sweep_frame, sweep_report

    out, points = tmp_path / "paired", {}
    base = {0.1: 0.60, 0.2: 0.58, 0.4: 0.50}
    for s in (0, 1, 2):
        for lr in base:
            name = f"lr={lr},seed={s}"
            points[name] = {"kind": "pretrain", "params": {"optim.lr": lr}, "config": {}}
            rows = [{"method": "simclr", "probe": "linear", "fraction": 0.1, "seed": sub, "n_labels": 10,
                     "accuracy": base[lr] + 0.05 * s + 0.002 * sub + (0.004 * s if lr == 0.2 else 0.0), "nll": 1.0,
                     "ece": 0.1, "brier": 0.5, "detail": "", "epoch": 4, "split": "val"} for sub in (0, 1)]
            _fake_point(out, name, "pretrain", {"optim.lr": lr}, s, rows)
    (out / "sweep.json").write_text(json.dumps(
        {"spec": {"name": "paired", "study": "generic", "split": "val"}, "points": points}))
    table = paired_against_best(*sweep_frame(out)).set_index("point")
    assert set(table["best on validation"]) == {"lr=0.1, epoch=4"} and list(table["seeds"]) == [3, 3]
    diffs = [-2.0, -1.6, -1.2]  # lr 0.2 minus lr 0.1 per seed, points
    half = stats.t.ppf(0.975, 2) * stats.tstd(diffs) / 3 ** 0.5
    ci = table.loc["lr=0.2, epoch=4", "Δ val accuracy (points), 95 % CI"]
    assert ci == f"{-1.6:+.2f} [{-1.6 - half:+.2f}, {-1.6 + half:+.2f}]" == "-1.60 [-2.59, -0.61]"
    assert table.loc["lr=0.4, epoch=4", "Δ val accuracy (points), 95 % CI"] == "-10.00 [-10.00, -10.00]"
    _, md, _ = sweep_report(out)
    assert "paired by pretraining seed" in md.read_text()


def test_a_sweep_scored_on_both_splits_keeps_supervised_on_test(tmp_path):
    cfg = write(tmp_path, grid={"augment.strength": [0.5]}, supervised=True, split="both")
    out = tmp_path / "sw"
    recs = run_sweep(cfg, out, ["probclr", "sweep"])
    pre = next(r for r in recs if r["kind"] == "pretrain")
    sup = next(r for r in recs if r["kind"] == "supervised")
    assert {row["split"] for row in pre["rows"]} == {"val", "test"}
    assert {row["split"] for row in sup["rows"]} == {"test"}
    assert list(out.glob("points/*/eval/last/val/results.json")) and list(out.glob("points/*/eval/last/results.json"))


def test_the_epochs_figure_draws_the_supervised_reference(tmp_path):
    from analysis.reports.sweep_report import sweep_report

    out, points = tmp_path / "ep", {}
    for kind in ("pretrain", "supervised"):
        name = "seed=0" if kind == "pretrain" else "supervised,seed=0"
        points[name] = {"kind": kind, "params": {}, "config": {}}
        epochs = (0, 1, 2, 5) if kind == "pretrain" else (None,)
        rows = [{"method": "simclr" if kind == "pretrain" else "supervised", "probe": "linear" if kind == "pretrain"
                 else "end-to-end", "fraction": f, "seed": 0, "n_labels": 10, "accuracy": 0.3 + f / 3 + 0.01 * (e or 0),
                 "nll": 1.0, "ece": 0.1, "brier": 0.5, "detail": "", "epoch": e, "split": split}
                for f in (0.1, 1.0) for e in epochs for split in (("val", "test") if kind == "pretrain" else ("test",))]
        _fake_point(out, name, kind, {}, 0, rows)
    (out / "sweep.json").write_text(json.dumps({"spec": {"name": "ep", "study": "epochs", "split": "both"},
                                                "points": points}))
    _, md, fig = sweep_report(out)
    assert fig.stat().st_size > 1000 and "chosen on validation" in md.read_text()
    assert "epoch=5" in md.read_text()  # the longest pretraining is the best on validation here


def test_pretraining_points_run_before_the_supervised_references(tmp_path, monkeypatch):
    """Every pretraining point runs before any supervised reference, each in the order of the file."""
    import studies.sweep as sw

    ran: list[str] = []
    monkeypatch.setattr(sw, "run_point", lambda pt, *a, **k: ran.append(pt.name))
    run_sweep(write(tmp_path, grid={"augment.strength": [0.25, 0.5]}, seeds=[0, 1], supervised=True),
              tmp_path / "sw", ["probclr", "sweep"])
    assert ran == ["strength=0.25,seed=0", "strength=0.25,seed=1", "strength=0.5,seed=0", "strength=0.5,seed=1",
                   "supervised,strength=0.25,seed=0", "supervised,strength=0.25,seed=1",
                   "supervised,strength=0.5,seed=0", "supervised,strength=0.5,seed=1"]


@pytest.mark.parametrize("command, shown", [
    ("probclr sweep --config configs/sweeps/epochs.yaml --out /work/runs/sweeps/epochs",
     "`probclr sweep --config configs/sweeps/epochs.yaml --out DIR` then `probclr sweep report DIR`"),
    ("probclr sweep --out  runs/x --config c.yaml",
     "`probclr sweep --out DIR --config c.yaml` then `probclr sweep report DIR`"),
])
def test_the_reproduce_line_names_no_machine_path(command, shown):
    from analysis.reports.sweep_report import reproduce_commands

    assert reproduce_commands({"command": command}) == shown
    assert reproduce_commands({}) == "`probclr sweep --config CONFIG --out DIR` then `probclr sweep report DIR`"
