"""The cluster path through submitit's local executor (real subprocesses, real pickled jobs): a sweep whose
point is pre-empted mid-run and requeued, a 2-process pretraining, and the launcher's one-line errors."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml
from clihelp import bad, ok

pytest.importorskip("submitit", reason="submitit is a test dependency (pip install -e '.[dev]')")

from studies.cluster import Launcher, launcher_from  # noqa: E402
from studies.sweep import expand, load_spec, submit_points  # noqa: E402

TINY = {"model.convnet_widths": [8, 16], "optim.warmup_epochs": 0, "model.proj_dim": 16, "optim.epochs": 4,
        "optim.batch_size": 64, "eval.fractions": [0.5], "eval.seeds": 1, "eval.probes": ["knn"]}


def _spec(tmp_path, strengths):
    p = tmp_path / f"s{len(strengths)}.yaml"
    p.write_text(yaml.safe_dump({"name": "tiny", "set": TINY, "grid": {"augment.strength": strengths}, "seeds": [0],
                                 "launcher": {"kind": "submitit-local", "time_min": 10}}))
    return p


def _wait_for(path, seconds=240):
    end = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.02)


def _preempt(folder):
    """What SLURM does before pre-empting or timing out a job: SIGUSR2 to its task processes."""
    pids = subprocess.run(["pgrep", "-f", f"submitit.core._submit {folder}"], capture_output=True,
                          text=True).stdout.split()
    assert pids
    for pid in pids:
        os.kill(int(pid), signal.SIGUSR2)


def test_a_preempted_sweep_point_is_requeued_and_ends_as_an_uninterrupted_one(tmp_path):
    full = tmp_path / "full"
    ok(["sweep", "--config", str(_spec(tmp_path, [0.25, 0.5, 1.0])), "--out", str(full), "--no-wait"])
    ids = json.loads((full / "jobs.json").read_text())
    assert ids["launcher"] == "submitit-local" and len(ids["jobs"]) == 3
    # the same point alone, pre-empted once its first epoch is saved
    spec = _spec(tmp_path, [0.5])
    (name,) = [p.name for p in expand(load_spec(spec))]
    cut = tmp_path / "cut"
    (job,) = submit_points(str(spec), cut, [name], ["probclr", "sweep"], Launcher("submitit-local").check())
    _wait_for(cut / "points" / name / "checkpoints" / "last.pt")
    assert not (cut / "points" / name / "done.json").exists()
    _preempt(cut / "submitit")
    rec = job.result()
    log = "".join(p.read_text() for p in (cut / "submitit").rglob("*_log.out"))
    assert "Requeued job" in log and "Calling checkpoint method" in log
    # sweep report reads finished points while the others may still run; then every point finishes
    _wait_for(full / "points" / name / "done.json")
    assert "Points finished:" in ok(["sweep", "report", str(full)])
    for point in json.loads((full / "sweep.json").read_text())["points"]:
        _wait_for(full / "points" / point / "done.json")
    ref = json.loads((full / "points" / name / "done.json").read_text())
    assert [r["accuracy"] for r in rec["rows"]] == [r["accuracy"] for r in ref["rows"]]
    a = torch.load(cut / "points" / name / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(full / "points" / name / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert [m["loss"] for m in a["metrics"]] == [m["loss"] for m in b["metrics"]]


def test_two_process_pretraining_through_submitit_equals_nproc_2(tmp_path):
    sets = ["--set", "model.convnet_widths=[8, 16]", "--set", "optim.warmup_epochs=0", "--set", "model.proj_dim=16",
            "--epochs", "2", "--batch-size", "64"]
    ok(["pretrain", "--launcher", "submitit-local", "--nproc", "2", *sets, "--out", str(tmp_path / "sub")])
    ok(["pretrain", "--nproc", "2", *sets, "--out", str(tmp_path / "local")])
    a = torch.load(tmp_path / "sub" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "local" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert json.loads((tmp_path / "sub" / "provenance.json").read_text())["world_size"] == 2
    assert json.loads((tmp_path / "sub.submitit" / "jobs.json").read_text())["launcher"] == "submitit-local"


def test_launcher_problems_are_one_line_before_anything_is_submitted(tmp_path, monkeypatch):
    import importlib.util
    import shutil

    spec = _spec(tmp_path, [0.5])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    lines = bad(["sweep", "--config", str(spec), "--out", str(tmp_path / "o"), "--launcher", "slurm"], "sbatch")
    assert len(lines) == 1 and "submitit-local" in lines[0]
    bad(["pretrain", "--launcher", "slurm", "--out", str(tmp_path / "p")], "sbatch")
    bad(["sweep", "--config", str(spec), "--out", str(tmp_path / "o"), "--launcher", "lsf"],
        "--launcher must be one of local, submitit-local, slurm, got 'lsf'")
    bad(["sweep", "--config", str(spec), "--out", str(tmp_path / "o"), "--time-min", "0"], "time_min must be >= 1")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "submitit" else real(n, *a))
    lines = bad(["sweep", "--config", str(spec), "--out", str(tmp_path / "o")], "pip install 'probclr[cluster]'")
    assert len(lines) == 1
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists() and not (tmp_path / "p.submitit").exists()
    with pytest.raises(Exception, match="unknown launcher key 'queue'"):
        launcher_from({"queue": "gpu"})
