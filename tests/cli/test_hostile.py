"""Hostile and careless input, by class (issue: reliability II): crafted checkpoints, options a command cannot
honour, models that cannot run, non-UTF-8 names, wrong CIFAR-10H files. One line, exit 2, no traceback,
nothing half-written."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from clihelp import bad, ok

TINY = ["--set", "model.convnet_widths=[8, 16]", "--set", "optim.warmup_epochs=0", "--set", "model.proj_dim=16",
        "--batch-size", "64", "--epochs", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "run"
    ok(["pretrain", *TINY, "--out", str(out)])
    return out


def _benchmark():
    """benchmarks/hostile.py as a module (a script, not a package); loaded once."""
    import importlib.util

    from conftest import REPO

    if "hostile" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hostile", REPO / "benchmarks" / "hostile.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["hostile"] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["hostile"]


def _crafted(run, tmp_path, change):
    return _benchmark().crafted_run(run, tmp_path, "case", change)


CRAFTED = {
    "no model": (lambda s: s.pop("model"), "'model' must be a mapping of tensors"),
    "model not tensors": (lambda s: s.__setitem__("model", {"w": "x"}), "'model' must be a mapping of tensors"),
    "no encoder.mean": (lambda s: s["model"].pop("encoder.mean"), "lacks the input normalisation"),
    "no config": (lambda s: s.pop("config"), "'config' must be a mapping"),
    "epoch two": (lambda s: s.__setitem__("epoch", "two"), "'epoch' must be a non-negative integer"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
@pytest.mark.parametrize("command", [["evaluate"], ["embed"], ["analyze"], ["export", "--format", "torchscript"]])
def test_crafted_checkpoint_fields_are_refused(run, tmp_path, case, command):
    change, match = CRAFTED[case]
    other = _crafted(run, tmp_path, change)
    extra = ["--out", str(tmp_path / "x.ts")] if command[0] == "export" else []
    lines = bad([command[0], "--run", str(other), *command[1:], *extra], match)
    assert len(lines) == 1 and not (tmp_path / "x.ts").exists()


def test_crafted_checkpoint_refused_on_resume(run, tmp_path):
    other = _crafted(run, tmp_path, lambda s: s.__setitem__("epoch", -3))
    bad(["pretrain", "--out", str(other), "--resume"], "'epoch' must be a non-negative integer")


def test_model_that_cannot_run_writes_nothing_and_the_retry_works(tmp_path):
    out = tmp_path / "deep"
    lines = bad(["pretrain", "--set", "model.convnet_widths=[8, 8, 8, 8, 8]", "--epochs", "1", "--out", str(out)],
                "cannot run on 16x16 images")
    assert len(lines) == 1 and not out.exists()
    ok(["pretrain", *TINY, "--out", str(out)])  # same --out, no hand-cleaning


@pytest.mark.parametrize("args, match", [
    (["pretrain", "--data-dir", "/nonexistent", "--epochs", "1"], "digits dataset is embedded"),
    (["demo", "--config", "/no/such.yaml"], "does not exist"),
    (["pretrain", "--config", "/dev/null"], "not a regular file"),
    (["pretrain", "--config", "/tmp"], "is a folder"),
    (["pretrain", "--set", "eval.fractions=[&a 0.1, *a]"], "aliases"),
])
def test_options_that_cannot_be_honoured_are_errors(tmp_path, args, match):
    lines = bad([*args, "--out", str(tmp_path / "o")], match)
    assert len(lines) == 1 and not (tmp_path / "o").exists()


def test_evaluate_options_that_cannot_be_honoured(run):
    bad(["evaluate", "--run", str(run), "--seeds", "0"], "eval.seeds")
    bad(["evaluate", "--run", str(run), "--set", "model.backbone=resnet18"], "evaluate cannot change model.backbone")


def test_wrong_cifar10h_files(run, tmp_path):
    ok(["embed", "--run", str(run)])
    npz = tmp_path / "h.npz"
    np.savez(npz, a=np.zeros((10000, 10)))
    strings = tmp_path / "s.npy"
    np.save(strings, np.full((10000, 10), "x"))
    for path, match in ((npz, "must be one numeric .npy array"), (strings, "must be one numeric .npy array")):
        bad(["analyze", "--run", str(run), "--cifar10h", str(path)], match)
    assert not (run / "analysis").exists()


def test_map_points_below_the_tsne_perplexity_is_a_usage_error(run):
    res = subprocess.run([sys.executable, "-m", "cli.main", "analyze", "--run", str(run), "--map-points", "30"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--map-points" in res.stderr and "Traceback" not in res.stderr


def test_non_utf8_folder_names(tmp_path):
    """A data folder and class folder whose names are not UTF-8: read, or refused in one escaped line."""
    from PIL import Image

    root = os.path.join(os.fsencode(tmp_path), b"data\xff")
    for cls in (b"cat\xfe", b"dog"):
        os.makedirs(os.path.join(root, cls))
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(os.path.join(root, cls, b"%d.png" % i).decode("utf-8",
                                                                                                       "surrogateescape"))
    out = os.path.join(os.fsencode(tmp_path), b"out")
    cmd = [os.fsencode(sys.executable), b"-m", b"cli.main", b"pretrain", b"--dataset", b"imagefolder", b"--data-dir",
           root, b"--epochs", b"1", b"--batch-size", b"4", b"--set", b"model.convnet_widths=[8]", b"--out", out]
    res = subprocess.run(cmd, capture_output=True, timeout=300)
    assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr[-1500:]
    missing = os.path.join(os.fsencode(tmp_path), b"gone\xff")
    res = subprocess.run(cmd[:7] + [missing] + cmd[8:-1] + [out + b"2"], capture_output=True, timeout=300)
    err = res.stderr.decode()
    assert res.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_the_hostile_campaign_handles_every_case():
    """benchmarks/hostile.py (the counts of BENCHMARKS §10): every one of its 400+ cases handled."""
    hostile = _benchmark()
    outcomes, failures = hostile.campaign()
    assert sum(sum(c.values()) for c in outcomes.values()) >= 400 and len(outcomes) >= 10
    assert failures == []


def test_unsafe_checkpoint_message_names_the_global_not_the_unsafe_retry(run, tmp_path):
    import shutil

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    other = tmp_path / "evil"
    shutil.copytree(run, other)
    torch.save({"format": "probclr-checkpoint-1", "model": Payload()}, other / "checkpoints" / "last.pt")
    lines = bad(["evaluate", "--run", str(other)], "not a safe probclr checkpoint")
    assert "GLOBAL" in lines[0] and "weights_only" not in lines[0] and not (tmp_path / "ran").exists()


def test_swapped_class_folders_never_reuse_stale_features(tmp_path, cifar_slice):
    """The feature cache is keyed by the images' contents: after two test class folders are swapped the
    labels change, the cache is not reused, and the result follows the data."""
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(cifar_slice, data)
    out = tmp_path / "run"
    ok(["pretrain", "--dataset", "cifar10", "--data-dir", str(data), "--epochs", "1", "--batch-size", "100",
        "--set", "model.convnet_widths=[8, 16]", "--set", "optim.warmup_epochs=0", "--out", str(out)])
    args = ["evaluate", "--run", str(out), "--fraction", "1.0", "--seeds", "1", "--probe", "linear"]
    ok(args)
    before = json.loads((out / "eval" / "last" / "results.json").read_text())["rows"][0]["accuracy"]
    test = data / "test"
    (test / "airplane").rename(test / "tmp")
    (test / "automobile").rename(test / "airplane")
    (test / "tmp").rename(test / "automobile")
    ok(args)
    after = json.loads((out / "eval" / "last" / "results.json").read_text())["rows"][0]["accuracy"]
    # one cache entry per split: the label pool's is reused, the changed test split gets a new one
    assert len(list((out / "embeddings" / "cache").glob("*.pt"))) == 3
    assert after != before


def test_analyze_takes_eval_settings_only(run):
    bad(["analyze", "--run", str(run), "--set", "optim.lr=0.1"], "analyze cannot change optim.lr")
