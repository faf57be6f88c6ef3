"""benchmarks/mixed_ambiguity.py on a real CIFAR-10 slice: the soft labels it writes line up with the folders
probclr reads (row by row, in probclr's order), and a run trained on them is scored against them."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from probclr.data.folders import list_image_folder

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "mixed_ambiguity.py"


def _module():
    spec = importlib.util.spec_from_file_location("mixed_ambiguity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(cifar_slice, out, mode):
    subprocess.run([sys.executable, str(SCRIPT), "build", "--mode", mode, "--data", str(cifar_slice), "--out",
                    str(out), "--train", "100", "--val", "50", "--test", "50"], check=True, cwd=REPO)


@pytest.mark.parametrize("mode", ["blend", "classes"])
def test_soft_labels_line_up_with_the_folders(cifar_slice, tmp_path, mode):
    out = tmp_path / mode
    _build(cifar_slice, out, mode)
    m = _module()
    for part, n in (("train", 100), ("val", 50), ("test", 50)):
        files, labels, classes = list_image_folder(out / part)
        truth = np.load(out / f"{part}_truth.npy")
        assert truth.shape == (n, 10) and len(files) == n and np.allclose(truth.sum(1), 1)
        if mode == "blend":  # the folder's class is the larger share; blends have exactly two classes
            assert (truth.argmax(1) == np.asarray(labels)).all()
            assert set((truth > 0).sum(1).tolist()) <= {1, 2}
        else:
            for k, row in zip(labels, truth, strict=True):
                assert np.array_equal(row, m.class_soft_label(k, 10))
    assert np.array_equal(np.load(out / "soft_labels.npy"), np.load(out / "train_truth.npy"))
    if mode == "classes":  # the images are the slice's own, pixel for pixel
        first = list_image_folder(out / "train")[0][0]
        src = [p for p in (cifar_slice / "train" / first.parent.name).iterdir()]
        pixels = np.asarray(Image.open(first))
        assert any(np.array_equal(pixels, np.asarray(Image.open(p).convert("RGB"))) for p in src)


def test_a_soft_label_run_is_scored_against_them(cifar_slice, tmp_path):
    from tests.clihelp import ok

    out = tmp_path / "blend"
    _build(cifar_slice, out, "blend")
    run = tmp_path / "run"
    ok(["pretrain", "--new-loss", "--dataset", "imagefolder", "--data-dir", str(out), "--epochs", "1",
        "--batch-size", "32", "--set", "model.convnet_widths=[8, 16]", "--set", "model.proj_dim=16",
        "--set", "data.pairs=soft_labels", "--set", f"data.soft_labels={out / 'soft_labels.npy'}", "--out", str(run)])
    subprocess.run([sys.executable, str(SCRIPT), "score", str(run), "--mixed", str(out), "--split", "test",
                    "--json", str(tmp_path / "s.json")], check=True, cwd=REPO)
    (row,) = json.loads((tmp_path / "s.json").read_text())
    assert row["images"] == 50 and row["blended"] == int((np.load(out / "test_truth.npy").max(1) < 1).sum())
    assert all(-1 <= row[f"spearman_{k}"] <= 1 for k in ("kappa", "feature_norm", "proj_norm"))
