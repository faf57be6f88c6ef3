"""TensorBoard and W&B (offline) loggers: scalars per step and epoch, kappa histograms, the projector."""

import pytest
from clihelp import bad

from probclr.config import load_config
from probclr.train.pretrain import pretrain

TINY = ["data.dataset=digits", "optim.batch_size=64", "model.convnet_widths=[8, 16]", "optim.warmup_epochs=0",
        "model.proj_dim=16", "optim.epochs=2", "run.log_every=5", "run.monitor_every=1", "run.monitor_bank=200",
        "run.monitor_queries=50"]


def test_tensorboard_scalars_histograms_and_projector(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    pretrain(load_config(None, [*TINY, "run.loggers=[jsonl, tensorboard]", "loss.name=mc_infonce"]), out)
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    tags = acc.Tags()
    for tag in ("step/loss", "step/lr", "step/images_per_s", "epoch/loss", "epoch/kappa_q50", "epoch/knn_val_acc"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert [e.step for e in acc.Scalars("epoch/loss")] == [1, 2]
    assert "epoch/kappa" in tags["histograms"]
    projector = out / "tensorboard" / "projector_config.pbtxt"
    assert projector.is_file() and "test_h" in projector.read_text()
    assert (out / "metrics.jsonl").read_text().count("\n") == 2  # jsonl is always written


def test_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "wb"
    pretrain(load_config(None, [*TINY, "run.loggers=[wandb]"]), out)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_missing_logger_package_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    lines = bad(["pretrain", "--set", "run.loggers=[tensorboard]", "--out", str(tmp_path / "r")],
                "pip install 'probclr[tensorboard]'")
    assert len(lines) == 1 and not (tmp_path / "r").exists()
    bad(["pretrain", "--set", "run.loggers=[mlflow]", "--out", str(tmp_path / "r")], "run.loggers items must be")


def test_installed_but_broken_logger_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    import importlib

    real = importlib.import_module

    def broken(name, *a):
        if name == "torch.utils.tensorboard":
            raise TypeError("Descriptors cannot be created directly (a protobuf clash)")
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", broken)
    lines = bad(["pretrain", "--set", "run.loggers=[tensorboard]", "--out", str(tmp_path / "r")],
                "installed but cannot be imported (TypeError: Descriptors")
    assert len(lines) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize(("env", "match"), [
    ({"WANDB_MODE": "offlne"}, "WANDB_MODE='offlne' is not a mode"),
    ({"WANDB_MODE": None, "WANDB_API_KEY": None}, "wandb login"),
])
def test_wandb_that_cannot_start_is_one_line_and_writes_nothing(tmp_path, monkeypatch, env, match):
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for k, v in env.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    lines = bad(["pretrain", "--set", "run.loggers=[wandb]", "--out", str(tmp_path / "r")], match)
    assert len(lines) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", ["-1", "x"])
def test_bad_monitor_values(tmp_path, value):
    bad(["pretrain", "--set", f"run.monitor_every={value}", "--out", str(tmp_path / "r")], "run.monitor_every")
