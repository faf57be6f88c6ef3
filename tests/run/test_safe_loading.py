"""Checkpoints, feature caches and embeddings are loaded without executing code: a file crafted to run code
when unpickled is refused with a clear one-line error, and its payload never runs."""

import os

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "model": _Payload(marker)}, path)  # torch.save pickles the payload object


@pytest.mark.parametrize("command", [["evaluate", "--fraction", "0.5", "--seeds", "1", "--probe", "knn"],
                                     ["embed"], ["analyze"]])
def test_crafted_checkpoint_is_refused_and_never_runs(tmp_path, command):
    run = tmp_path / "run"
    marker = tmp_path / "pwned"
    _malicious(run / "checkpoints" / "last.pt", marker)
    res = runner.invoke(app, [command[0], "--run", str(run), *command[1:]])
    assert res.exit_code == 2, res.output
    assert "refusing to load" in res.output and "Traceback" not in res.output
    assert not marker.exists()  # the payload never ran
    torch.load(run / "checkpoints" / "last.pt", weights_only=False)  # an unsafe load *does* run it:
    assert marker.exists()  # so the payload is real and the refusal above is what protected us


def test_crafted_embeddings_file_is_refused(tmp_path):
    from probclr.eval.embeddings import load_run_embeddings
    from probclr.run.rundir import RunDir

    marker = tmp_path / "pwned"
    run = RunDir(tmp_path / "run")
    _malicious(run.root / "embeddings" / "last.pt", marker)
    (run.root / "checkpoints").mkdir(parents=True)
    (run.root / "checkpoints" / "last.pt").write_bytes(b"x")
    from probclr.errors import ProbclrError

    with pytest.raises(ProbclrError, match="refusing to load"):
        load_run_embeddings(run, run.root / "checkpoints" / "last.pt")
    assert not marker.exists()


TINY = ["--set", "model.convnet_widths=[8, 16]", "--set", "optim.warmup_epochs=0", "--set", "model.proj_dim=16"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny digits runs whose models differ (widths and projection size)."""
    root = tmp_path_factory.mktemp("two")
    a, b = root / "a", root / "b"
    other = ["--set", "model.convnet_widths=[8, 32]", "--set", "optim.warmup_epochs=0", "--set", "model.proj_dim=8"]
    for out, flags in ((a, TINY), (b, other)):
        res = runner.invoke(app, ["pretrain", "--epochs", "0", "--out", str(out), *flags])
        assert res.exit_code == 0, res.output
    return a, b


@pytest.mark.parametrize("command", [["evaluate", "--fraction", "0.5", "--seeds", "1", "--probe", "knn"],
                                     ["embed"], ["analyze"]])
def test_checkpoint_of_another_run_is_refused_naming_the_difference(tmp_path, two_runs, command):
    """A checkpoint copied in from a run with another config is refused, and the message says what differs."""
    import shutil

    a, b = two_runs
    run = tmp_path / "run"
    shutil.copytree(a, run)
    shutil.copy(b / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    res = runner.invoke(app, [command[0], "--run", str(run), *command[1:]])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "is not from run" in line and "model.convnet_widths [8, 32] (run: [8, 16])" in line
    assert "model.proj_dim 8 (run: 16)" in line
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written


def test_checkpoint_whose_weights_do_not_match_its_config_is_refused(tmp_path, two_runs):
    """Weights of one model under the config of another: one line listing the mismatched tensors."""
    a, b = two_runs
    state = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    state["model"] = torch.load(b / "checkpoints" / "last.pt", weights_only=True)["model"]
    state["model"]["extra.weight"] = torch.zeros(1)
    path = tmp_path / "mixed.pt"
    torch.save(state, path)
    from probclr.eval.frozen_model import load_model
    from probclr.run.checkpoint import CheckpointError

    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert "\n" not in msg and "does not hold the model its config describes" in msg
    assert "unexpected extra.weight" in msg and "shape of" in msg and "(model: " in msg


@pytest.mark.parametrize(("change", "match"), [
    ("nan", "hold NaN or infinite values"), ("epoch", "beyond the"),
])
@pytest.mark.parametrize("command", [["evaluate", "--fraction", "0.5", "--seeds", "1", "--probe", "knn"], ["embed"]])
def test_a_checkpoint_with_nan_weights_or_an_impossible_epoch_is_refused(tmp_path, two_runs, change, match, command):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_runs[0], run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    if change == "nan":
        key = next(k for k, v in state["model"].items() if v.is_floating_point() and k.endswith("weight"))
        state["model"][key] = torch.full_like(state["model"][key], float("nan"))
    else:
        state["epoch"] = 10**6
    torch.save(state, run / "checkpoints" / "last.pt")
    res = runner.invoke(app, [command[0], "--run", str(run), *command[1:]])
    assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_every_reader_of_a_pt_file_goes_through_the_one_guarded_loader():
    """`torch.load` is called in one place (probclr.io.safe_torch_load, weights_only=True); every other reader
    of a .pt file calls that function, so none can forget the guard or word its refusal differently."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    calls = []
    for top in ("probclr", "analysis", "studies", "cli"):
        for f in (root / top).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                    calls.append(str(f.relative_to(root)))
    assert calls == ["probclr/io.py"], calls
