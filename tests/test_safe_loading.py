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
    from analysis.analyze import load_embeddings
    from probclr.rundir import RunDir

    marker = tmp_path / "pwned"
    run = RunDir(tmp_path / "run")
    _malicious(run.root / "embeddings" / "last.pt", marker)
    (run.root / "checkpoints").mkdir(parents=True)
    (run.root / "checkpoints" / "last.pt").write_bytes(b"x")
    from probclr.errors import ProbclrError

    with pytest.raises(ProbclrError, match="refusing to load"):
        load_embeddings(run, run.root / "checkpoints" / "last.pt")
    assert not marker.exists()
