"""Bad input, systematically, for every command added after the first ones (see test_cli.py for those):
one line naming the problem, exit code 2, no traceback, nothing partial left behind."""

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


USAGE = ("--ambiguity-images", "--map-points", "Missing argument", "--jobs", "--steps")


def _check(args, match, tmp_path, created=()):
    if match in USAGE:  # flag-parsing errors: the console entry point (cli.main.main) makes them one line
        import subprocess
        import sys

        res = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=120)
        code, output = res.returncode, res.stderr + res.stdout
    else:
        r = runner.invoke(app, args)
        code, output = r.exit_code, r.output
    assert code == 2, (code, output)
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and match in lines[0], output
    assert "Traceback" not in output
    for path in created:
        assert not (tmp_path / path).exists(), path


@pytest.fixture
def places(tmp_path):
    (tmp_path / "empty dir ü").mkdir()
    (tmp_path / "a file.txt").write_text("not a run")
    (tmp_path / "bad.yaml").write_text("grid: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "unknown.yaml").write_text("grid:\n  optim.nope: [1]\n")
    (tmp_path / "typed.yaml").write_text("grid:\n  optim.epochs: [two]\n")
    (tmp_path / "empty_grid.yaml").write_text("grid: {}\n")
    return tmp_path


CASES = [
    (["analyze", "--run", "{t}/nope"], "does not exist", ()),
    (["analyze", "--run", "{t}/empty dir ü"], "holds no checkpoint", ("empty dir ü/analysis",)),
    (["analyze", "--run", "{t}/a file.txt"], "does not exist", ()),
    (["analyze", "--run", "{t}/nope", "--ambiguity-images", "0"], "--ambiguity-images", ()),
    (["analyze", "--run", "{t}/nope", "--map-points", "-5"], "--map-points", ()),
    (["embed", "--run", "{t}/empty dir ü"], "holds no checkpoint", ("empty dir ü/embeddings",)),
    (["report", "{t}/nope", "--out", "{t}/rep"], "does not exist", ("rep",)),
    (["report", "{t}/empty dir ü", "--out", "{t}/rep"], "probclr evaluate --run", ("rep",)),
    (["report", "--out", "{t}/rep"], "Missing argument", ("rep",)),
    (["sweep", "--config", "{t}/nope.yaml", "--out", "{t}/sw"], "does not exist", ("sw",)),
    (["sweep", "--config", "{t}/bad.yaml", "--out", "{t}/sw"], "not valid YAML", ("sw",)),
    (["sweep", "--config", "{t}/list.yaml", "--out", "{t}/sw"], "must be a mapping", ("sw",)),
    (["sweep", "--config", "{t}/unknown.yaml", "--out", "{t}/sw"], "optim.nope", ("sw",)),
    (["sweep", "--config", "{t}/typed.yaml", "--out", "{t}/sw"], "optim.epochs", ("sw",)),
    (["sweep", "--config", "{t}/empty_grid.yaml", "--out", "{t}/sw"], "grid is empty", ("sw",)),
    (["sweep", "--config", "{t}/empty_grid.yaml", "--jobs", "0"], "--jobs", ()),
    (["sweep", "report", "{t}/empty dir ü"], "not a sweep directory", ()),
    (["sweep", "report", "{t}/a file.txt"], "not a sweep directory", ()),
    (["bench", "--set", "optim.batch_size=0", "--out", "{t}/b.json"], "batch_size", ("b.json",)),
    (["bench", "--steps", "0"], "--steps", ()),
    (["bench", "--set", "nope=1", "--out", "{t}/b.json"], "nope", ("b.json",)),
    (["pretrain", "--set", "optim.grad_cache_chunk=0", "--out", "{t}/p"], "grad_cache_chunk", ("p",)),
    (["pretrain", "--set", "loss.kl_weight=-1", "--out", "{t}/p"], "kl_weight", ("p",)),
    (["pretrain", "--set", "eval.fractions=[0.0]", "--out", "{t}/p"], "eval.fractions", ("p",)),
    (["supervised", "--seeds", "0", "--out", "{t}/s"], "seeds", ("s",)),
    (["pretrain", "--device", "cuda", "--out", "{t}/p"], "no CUDA device", ("p",)),
    (["pretrain", "--new-loss", "--set", "loss.name=shrinkage", "--out", "{t}/p"], "loss.name is given twice", ("p",)),
    (["pretrain", "--epochs", "3", "--set", "optim.epochs=5", "--out", "{t}/p"], "optim.epochs is given twice", ("p",)),
    (["bench", "--set", "run.device=cuda", "--out", "{t}/b.json"], "no CUDA device", ("b.json",)),
]


@pytest.mark.parametrize("args,match,created", CASES, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input(places, args, match, created):
    if match == "no CUDA device":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present: --device cuda is valid here")
    _check([a.replace("{t}", str(places)) for a in args], match, places, created)
