"""The Python API and the examples that use it (run as a user would, in a subprocess)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO

import probclr
from probclr.errors import ConfigError


def test_api_pretrain_evaluate_load_embed(tmp_path):
    run = probclr.pretrain(None, out=tmp_path / "r", overrides=["optim.epochs=1", "model.convnet_widths=[8, 16]",
                                                                "optim.batch_size=64", "optim.warmup_epochs=0"])
    assert isinstance(run, probclr.Run) and run.config.optim.epochs == 1 and len(run.metrics) == 1
    table = probclr.evaluate(run, fractions=[0.5], seeds=1, probes=["linear"])
    assert isinstance(table, pd.DataFrame) and list(table["probe"]) == ["linear"]
    val = probclr.evaluate(run, fractions=[0.5], seeds=1, probes=["linear"], split="val")
    assert list(val.columns) == list(table.columns)  # the validation split, same schema
    # a lone string or number is one item (not 'k', 'n', 'n'), an array is its values; bad values name themselves
    knn = probclr.evaluate(run, fractions=0.5, seeds=1, probes="knn", split="val")
    assert list(knn["probe"]) == ["knn"] and list(knn["fraction"]) == [0.5]
    assert list(probclr.evaluate(run, fractions=np.array([0.5]), seeds=1, probes=("knn",), split="val")["probe"]) == ["knn"]
    with pytest.raises(ConfigError, match="eval.probes items must be"):
        probclr.evaluate(run, fractions=0.5, seeds=1, probes="kNN", split="val")
    enc = probclr.load_encoder(run)
    x = torch.rand(4, 3, 16, 16)
    h = probclr.embed(enc, x)
    assert h.shape == (4, 16) and torch.equal(h, probclr.embed(run, x))
    assert torch.equal(probclr.load_encoder(run.checkpoint)(x), h)


def _example(args, tmp_path):
    res = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
                              "PROBCLR_CACHE_DIR": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_quickstart_example(tmp_path):
    out = _example([str(REPO / "examples" / "quickstart.py"), "--epochs", "1", "--out", str(tmp_path / "q")], tmp_path)
    assert "three test images -> features of shape (3, 128)" in out


def test_own_folder_example(tmp_path, cifar_slice):
    out = _example([str(REPO / "examples" / "own_folder.py"), str(cifar_slice), "--epochs", "1", "--batch-size", "64",
                    "--out", str(tmp_path / "o")], tmp_path)
    assert "linear" in out and "knn" in out and "probclr export" in out


def test_api_reference_builds_strict(tmp_path):
    """mkdocs + mkdocstrings render the API reference from the docstrings, with --strict (warnings fail)."""
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    assert "load_encoder" in Path(tmp_path / "site" / "api" / "index.html").read_text()
