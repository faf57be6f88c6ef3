"""The frozen whitening first layer (model.convnet_whiten): its statistics against slow references and closed
forms, its sample independent of the storage order, frozen through training, refused where it cannot apply."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probclr.config import ConfigError, load_config
from probclr.model.whitening import WHITEN_EPS, first_layer_whitening, patch_moments, whitening_filters, whitening_sample
from probclr.run.checkpoint import load_checkpoint
from probclr.train.pretrain import load_data, pretrain

TINY = ["data.dataset=digits", "optim.batch_size=64", "model.convnet_widths=[8, 16]", "optim.warmup_epochs=0",
        "model.proj_dim=16", "model.convnet_whiten=true"]


def correlated_images(n: int = 40, seed: int = 0) -> torch.Tensor:
    """(n, 3, 10, 10) images whose neighbouring pixels and channels are correlated, as in natural images."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 12, 12, generator=gen)  # (n, 3, 12, 12)
    x = F.avg_pool2d(x, 3, stride=1)  # (n, 3, 10, 10) spatially smooth
    mix = torch.tensor([[1.0, 0.6, 0.3], [0.2, 1.0, 0.5], [0.1, 0.4, 1.0]])
    return torch.einsum("dc,nchw->ndhw", mix, x) + torch.tensor([0.5, -0.2, 0.1]).view(1, 3, 1, 1)


def test_patch_moments_equal_a_loop_over_every_patch():
    x = correlated_images(5)
    patches = np.array([x[i, :, r:r + 3, c:c + 3].numpy().ravel()  # channel, then row, then column
                        for i in range(5) for r in range(8) for c in range(8)], dtype=np.float64)  # (320, 27)
    mean, cov = patch_moments(x, 3, chunk=2)
    np.testing.assert_allclose(mean.numpy(), patches.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(patches, rowvar=False, bias=True), atol=1e-10)


def test_filters_whiten_the_patches_and_come_in_both_signs():
    """Filter i's responses have variance lambda_i / (lambda_i + eps) and are uncorrelated with the others
    (closed form W Sigma W^T); the second half is the first with the opposite sign."""
    x = correlated_images()
    w = whitening_filters(x, 16)  # (16, 3, 3, 3)
    assert w.shape == (16, 3, 3, 3)
    torch.testing.assert_close(w[8:], -w[:8])
    out = F.conv2d(x.double(), w[:8].double())  # (n, 8, 8, 8) responses at every patch position
    resp = out.permute(0, 2, 3, 1).reshape(-1, 8)  # (n 64, 8)
    values = torch.linalg.eigvalsh(patch_moments(x, 3)[1]).flip(0)[:8]  # the 8 largest, descending
    expected = torch.diag(values / (values + WHITEN_EPS))
    torch.testing.assert_close(torch.cov(resp.T, correction=0), expected, atol=1e-5, rtol=1e-5)
    assert (torch.diff(torch.diag(expected)) <= 1e-12).all()  # the directions of largest variance come first


def test_an_odd_or_too_wide_first_layer_is_refused():
    x = correlated_images(4)
    with pytest.raises(ValueError, match="even number of filters, at most 54"):
        whitening_filters(x, 7)
    with pytest.raises(ValueError, match="got 56"):
        whitening_filters(x, 56)
    for bad, needle in ((["model.convnet_widths=[9, 16]"], "convnet_widths\\[0\\] = 9"),
                        (["model.convnet_widths=[64, 16]"], "convnet_widths\\[0\\] = 64"),
                        (["model.backbone=resnet18"], "needs model.backbone convnet, got resnet18")):
        with pytest.raises(ConfigError, match=needle):
            load_config(None, ["model.convnet_whiten=true", *bad])


def test_the_sample_is_the_same_whatever_order_the_images_are_stored_in():
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    stored = images[order]  # stored[j] = images[order[j]]
    rows = torch.argsort(order)  # the stored row of canonical image i
    a, b = whitening_sample(images, None, 7), whitening_sample(stored, rows, 7)
    assert torch.equal(a, b) and torch.equal(a[0], images[0]) and torch.equal(a[-1], images[-1])


def test_off_by_default():
    cfg = load_config(None, [])
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    assert first_layer_whitening(cfg.model, images, None, torch.zeros(3), torch.ones(3)) is None


def _layer(ckpt, name: str) -> torch.Tensor:
    return next(v for k, v in load_checkpoint(ckpt)["model"].items() if k.endswith(name))


def test_pretraining_keeps_the_whitening_frozen_and_in_the_checkpoint(tmp_path):
    """The first layer starts as the whitening of the pretraining images and is the same two epochs later
    (it is also what a resumed run or an evaluation loads); the next layer trains."""
    cfg = load_config(None, [*TINY, "optim.epochs=2", "run.keep_checkpoints=true"])
    data, _ = load_data(cfg, torch.device("cpu"))
    assert data.whitening is not None and data.whitening.shape == (8, 3, 3, 3)
    pretrain(cfg, tmp_path / "r")
    ckpts = tmp_path / "r" / "checkpoints"
    for name in ("epoch_0000.pt", "last.pt"):
        torch.testing.assert_close(_layer(ckpts / name, "features.0.weight"), data.whitening, rtol=0, atol=0)
    assert not torch.equal(_layer(ckpts / "epoch_0000.pt", "features.4.weight"),
                           _layer(ckpts / "last.pt", "features.4.weight"))


def test_the_supervised_baseline_gets_the_same_frozen_whitening(tmp_path):
    """Supervised from scratch with the same config: its first layer is the pretraining images' whitening
    (label-free, computed once per run), and stays so through training."""
    from probclr.data.sources import load_splits
    from probclr.eval.supervised import Setting, train_and_score
    from probclr.model.backbones import channel_stats

    cfg = load_config(None, [*TINY, "supervised.steps=3", "supervised.batch_size=32"])
    splits = load_splits(cfg.data)
    setting = Setting.of(cfg, splits, torch.device("cpu"))
    mean, std = channel_stats(splits.pretrain.images)
    expected = first_layer_whitening(cfg.model, splits.pretrain.images, splits.pretrain_rows, mean, std)
    torch.testing.assert_close(setting.whitening, expected, rtol=0, atol=0)
    keep = tmp_path / "model.pt"
    train_and_score(cfg, setting, splits.test, 0.5, 0, keep)
    first = next(v for k, v in torch.load(keep).items() if k.endswith("features.0.weight"))
    torch.testing.assert_close(first, expected, rtol=0, atol=0)


def test_fine_tuning_a_whitened_encoder_keeps_its_first_layer_frozen(tmp_path):
    """Fine-tuning (evaluate --finetune) turns gradients back on for the encoder but not for the whitening,
    which leaves training as it entered; the next layer trains."""
    from probclr.data.sources import load_splits
    from probclr.eval.frozen_model import load_encoder
    from probclr.eval.supervised import Classifier, train_classifier

    cfg = load_config(None, [*TINY, "optim.epochs=1", "supervised.steps=3", "supervised.batch_size=32"])
    pretrain(cfg, tmp_path / "r")
    encoder = load_encoder(tmp_path / "r" / "checkpoints" / "last.pt").trainable()
    grads = {k: p.requires_grad for k, p in encoder.named_parameters()}
    assert grads["backbone.features.0.weight"] is False
    assert all(v for k, v in grads.items() if not k.startswith("backbone.features.0."))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    splits = load_splits(cfg.data)
    model = Classifier(encoder, 10)
    train_classifier(cfg, model, splits.train.images[:64], splits.train.labels[:64], 0, torch.device("cpu"))
    after = encoder.state_dict()
    torch.testing.assert_close(after["backbone.features.0.weight"], before["backbone.features.0.weight"], rtol=0, atol=0)
    assert not torch.equal(after["backbone.features.4.weight"], before["backbone.features.4.weight"])
