import math

import pytest
import torch

from probclr.config import ModelConfig, OptimConfig
from probclr.eval.model_card import convnet_layers
from probclr.model.backbones import ConvNet, build_encoder, channel_stats, cifar_resnet
from probclr.model.heads import ProjectionHead
from probclr.train.optim import LARS, build_optimizer, lr_at, param_groups, scaled_lr


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet50", 2048)])
def test_cifar_resnets(name, dim):
    net, d = cifar_resnet(name)
    assert d == dim
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, dim)


def test_convnet_and_head_shapes():
    enc = build_encoder(ModelConfig(), torch.zeros(3), torch.ones(3))
    h = enc(torch.rand(5, 3, 32, 32))
    assert h.shape == (5, 256) and enc.out_dim == 256
    assert ConvNet((8, 16))(torch.rand(2, 3, 16, 16)).shape == (2, 16)
    assert ProjectionHead(256, 256, 128)(h).proj.shape == (5, 128)


def test_convnet_without_last_pool_averages_the_full_last_grid():
    torch.manual_seed(0)
    net = ConvNet((8, 16), pool_last=False).eval()
    x = torch.rand(3, 3, 16, 16)
    grid = net.features(x)  # (3, 16, 8, 8): one pool, after the first stage only
    assert grid.shape == (3, 16, 8, 8)
    pooled = ConvNet((8, 16)).eval()
    pooled.load_state_dict(net.state_dict())  # same weights: the pool has none, so the keys match
    with torch.no_grad():
        torch.testing.assert_close(net(x), grid.mean(dim=(2, 3)))
        torch.testing.assert_close(pooled(x), torch.nn.functional.max_pool2d(grid, 2).mean(dim=(2, 3)))
    for pool_last in (True, False):  # the model card's layer list rebuilds the same module, layer for layer
        built = ConvNet((8, 16), pool_last=pool_last).features
        listed = [eval("torch.nn." + layer) for layer in convnet_layers((8, 16), pool_last)]
        assert [type(m) for m in built] == [type(m) for m in listed]


def test_channel_stats_match_direct_computation():
    x = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.double().div(255)
    torch.testing.assert_close(mean, ref.mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(std, ref.std(dim=(0, 2, 3), unbiased=False).float(), atol=1e-5, rtol=1e-4)


def test_lars_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "weight_decay": 0.1, "lars": True},
                {"params": [b], "weight_decay": 0.0, "lars": False}], lr=0.5, momentum=0.9, eta=0.01)
    w.grad = torch.tensor([0.0, 1.0])
    b.grad = torch.tensor([2.0])
    opt.step()
    g = torch.tensor([0.0, 1.0]) + 0.1 * torch.tensor([3.0, 4.0])  # grad + wd * w
    trust = 0.01 * 5.0 / g.norm()
    torch.testing.assert_close(w.data, torch.tensor([3.0, 4.0]) - 0.5 * trust * g)
    torch.testing.assert_close(b.data, torch.tensor([1.0 - 0.5 * 2.0]))  # plain SGD for BN / bias
    # second step uses momentum
    w_before = w.data.clone()
    w.grad = torch.tensor([0.0, 1.0])
    opt.step()
    g2 = torch.tensor([0.0, 1.0]) + 0.1 * w_before
    buf = 0.9 * trust * g + 0.01 * w_before.norm() / g2.norm() * g2
    torch.testing.assert_close(w.data, w_before - 0.5 * buf)


def test_no_decay_on_bn_and_bias():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    decay, no_decay = param_groups(model, 1e-6)
    assert len(decay["params"]) == 1 and len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0
    for name in ("lars", "adamw", "sgd"):
        assert build_optimizer(model, OptimConfig(name=name)) is not None


def test_schedule_and_lr_scaling():
    assert scaled_lr(OptimConfig(lr=0.3, batch_size=512)) == pytest.approx(0.6)  # 0.3 x 512 / 256
    assert scaled_lr(OptimConfig(lr=0.3, batch_size=1024, lr_scaling="sqrt")) == pytest.approx(0.6)
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[-1] < 0.01
    assert lr_at(0, 10, 0, 1.0) == pytest.approx(1.0) and math.isfinite(lr_at(5, 1, 0, 1.0))
