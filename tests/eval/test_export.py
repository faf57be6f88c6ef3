"""probclr export: the encoder loads into plain torchvision (strict) or TorchScript and gives the same features."""

import os

import torch
import torchvision
from clihelp import bad, ok
from torch import nn

from probclr.config import DataConfig, load_config
from probclr.data.sources import load_splits
from probclr.eval.frozen_model import load_encoder
from probclr.model.forward import as_float_rgb
from probclr.train.pretrain import pretrain


def _run(tmp_path, backbone, cifar_slice):
    out = tmp_path / backbone
    sets = [f"model.backbone={backbone}", "model.convnet_widths=[8, 16]", "optim.epochs=1", "optim.batch_size=100",
            "data.dataset=cifar10", f"data.data_dir={cifar_slice}", "optim.warmup_epochs=0", "data.train_limit=200",
            "data.test_limit=20", "model.proj_dim=16"]
    pretrain(load_config(None, sets), out)
    images = load_splits(DataConfig(dataset="cifar10", data_dir=str(cifar_slice), test_limit=20)).test.images
    return out, as_float_rgb(images)


def test_resnet18_exports_to_plain_torchvision(tmp_path, cifar_slice):
    run, x = _run(tmp_path, "resnet18", cifar_slice)
    f = tmp_path / "r18.pt"
    ok(["export", "--run", str(run), "--format", "torchvision", "--out", str(f)])
    d = torch.load(f, weights_only=True)  # no probclr needed from here on
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.load_state_dict(d["state_dict"], strict=True)
    net.eval()
    mean, std = d["mean"].view(1, 3, 1, 1), d["std"].view(1, 3, 1, 1)
    assert d["arch"] == "resnet18" and "maxpool = nn.Identity()" in d["stem"] and "git_sha" in d["provenance"]
    with torch.no_grad():
        ours = load_encoder(run / "checkpoints" / "last.pt")(x)
        theirs = net((x - mean) / std)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_convnet_exports_as_torchscript_only(tmp_path, cifar_slice):
    run, x = _run(tmp_path, "convnet", cifar_slice)
    f = tmp_path / "enc.ts"
    ok(["export", "--run", str(run), "--format", "torchscript", "--out", str(f)])
    scripted = torch.jit.load(str(f))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), load_encoder(run / "checkpoints" / "last.pt")(x), atol=1e-5, rtol=0)
    lines = bad(["export", "--run", str(run), "--format", "torchvision", "--out", str(tmp_path / "no.pt")],
                "has no torchvision model")
    assert len(lines) == 1 and not (tmp_path / "no.pt").exists()
    bad(["export", "--run", str(run), "--format", "tflite", "--out", str(tmp_path / "x")], "--format must be one of")
    bad(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x")], "does not exist")
    # never onto the run's own files, a symlink, a FIFO or a folder: each untouched
    ckpt, cfg = run / "checkpoints" / "last.pt", run / "config.yaml"
    before = {p: p.read_bytes() for p in (ckpt, cfg)}
    for target in (ckpt, cfg):
        bad(["export", "--run", str(run), "--format", "torchscript", "--out", str(target)], "inside the run directory")
    (tmp_path / "link").symlink_to(cfg)
    bad(["export", "--run", str(run), "--format", "torchscript", "--out", str(tmp_path / "link")], "symbolic link")
    os.mkfifo(tmp_path / "fifo")
    bad(["export", "--run", str(run), "--format", "torchscript", "--out", str(tmp_path / "fifo")], "not a regular file")
    assert all(p.read_bytes() == b for p, b in before.items()) and (tmp_path / "link").is_symlink()
