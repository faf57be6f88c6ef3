"""ResNet stems by image size, and the configs for larger images, each run on synthetic images of its size."""

import pytest
import torch
import torchvision
from conftest import REPO
from PIL import Image
from torch import nn

from probclr.config import load_config
from probclr.model.backbones import resnet, stem_for
from probclr.train.pretrain import pretrain


def test_stem_by_size_and_shapes():
    assert [stem_for(s) for s in (32, 48, 64, 96, 128, 160, 224)] == ["cifar"] * 2 + ["small"] * 3 + ["imagenet"] * 2
    x = torch.rand(2, 3, 64, 64)
    for stem, first_stride in (("cifar", 1), ("small", 1), ("imagenet", 2)):
        net, dim = resnet("resnet18", stem)
        assert net.conv1.stride == (first_stride, first_stride) and dim == 512
        assert isinstance(net.maxpool, nn.Identity) == (stem == "cifar")
        assert net.eval()(x).shape == (2, 512)
    ours, _ = resnet("resnet18", "imagenet")
    ref = torchvision.models.resnet18()
    ref.fc = nn.Identity()
    ref.load_state_dict(ours.state_dict(), strict=True)  # the ImageNet stem is torchvision's own


def _folder(root, size, n=4):
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (size + 3, size), (60 * i, 100 if c == "a" else 0, 0)).save(d / f"{i}.png")


@pytest.mark.slow
@pytest.mark.parametrize("config, size, stem", [("stl10_resnet18.yaml", 96, "small"),
                                                ("tiny_imagenet_resnet18.yaml", 64, "small"),
                                                ("imagenet100_resnet50.yaml", 224, "imagenet")])
def test_configs_for_larger_images_run_on_synthetic_images(tmp_path, config, size, stem):
    _folder(tmp_path / "data", size)
    cfg = load_config(REPO / "configs" / config, [
        "data.dataset=imagefolder", f"data.data_dir={tmp_path / 'data'}", f"data.image_size={size}",
        "optim.batch_size=4", "optim.epochs=1", "optim.warmup_epochs=0", "run.monitor_every=0", "data.val_size=0"])
    out = tmp_path / "run"
    pretrain(cfg, out)
    saved = load_config(out / "config.yaml")
    assert saved.model.stem == stem  # auto, resolved from the image size and recorded
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert (state["model"]["encoder.backbone.conv1.weight"].shape[-1] == (7 if stem == "imagenet" else 3))


@pytest.mark.slow
def test_gpu_suite_smoke_runs_the_same_path_on_cpu(tmp_path):
    """benchmarks/gpu_suite.sh --smoke: bench (eager, compiled), budgeted pretraining with the kNN monitor,
    evaluation, a --new-loss run, and the JSON + Markdown summary, on the CPU, so the suite never rots."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "suite"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(out), "--smoke"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    suite = json.loads((out / "suite.json").read_text())
    assert suite["pretrain"]["epochs"] >= 1 and suite["pretrain"]["knn_val_acc"][-1] is not None
    assert {s["probe"] for s in suite["linear_and_knn"]} == {"linear", "knn"}
    assert "kappa_q50" in suite["newloss_last_epoch"] and "eager" in suite["bench"]
    md = (out / "suite.md").read_text()
    assert md.startswith("### GPU suite on cpu")
    assert "bench --config" in md and "pretrain --config" in md
