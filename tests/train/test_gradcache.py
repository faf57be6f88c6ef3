import pytest
import torch
from torch import nn

from probclr.model.heads import HeadOutput
from probclr.model.losses import mc_infonce, nt_xent
from probclr.train.gradcache import chunks, grad_cached_backward


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 16))


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _nt(out):
    a, b = (out.proj if isinstance(out, HeadOutput) else out).chunk(2)
    return nt_xent(a, b, 0.2), None


def _head(net):
    return lambda v: HeadOutput(net(v))  # the head output every SimCLR model returns


@pytest.mark.parametrize("chunk", [2, 6, 16, 64])
def test_grad_cache_equals_full_batch_gradient(chunk):
    views = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # 32 pairs
    full = _net()
    loss_full, _ = _nt(full(views))
    loss_full.backward()
    cached = _net()
    loss_gc, _ = grad_cached_backward(cached, _head(cached), views, _nt, chunk)
    torch.testing.assert_close(loss_gc, loss_full.detach())
    for g1, g2 in zip(_grads(full), _grads(cached), strict=True):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_grad_cache_with_the_probabilistic_loss_and_bn_in_eval_mode():
    class Prob(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(_net(), nn.BatchNorm1d(16))
            self.k = nn.Linear(16, 1)

        def forward(self, x):
            h = self.body(x)
            kappa = 10 + torch.nn.functional.softplus(self.k(h)).squeeze(1)
            return HeadOutput(h, kappa)  # mu = h / ||h||

    def loss(out):
        torch.manual_seed(5)  # the same Monte-Carlo draws in both computations
        n = out.mu.shape[0] // 2
        return mc_infonce(out.mu[:n], out.kappa[:n], out.mu[n:], out.kappa[n:], 0.2, 4, 1e-3), out.kappa.detach()

    views = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    full = Prob().eval()
    cached = Prob().eval()
    cached.load_state_dict(full.state_dict())
    l1, _ = loss(full(views))
    l1.backward()
    l2, kappa = grad_cached_backward(cached, cached, views, loss, 8)
    torch.testing.assert_close(l2, l1.detach())
    assert kappa.shape == (32,)
    for g1, g2 in zip(_grads(full), _grads(cached), strict=True):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_plain_accumulation_is_not_the_full_batch_gradient():
    """Why gradient caching: accumulating micro-batch NT-Xent losses optimises fewer negatives."""
    views = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    full = _net()
    _nt(full(views))[0].backward()
    acc = _net()
    a, b = views[:32], views[32:]
    for i in range(0, 32, 8):  # 4 micro-batches of 8 pairs, losses averaged
        (nt_xent(acc(a[i:i + 8]), acc(b[i:i + 8]), 0.2) / 4).backward()
    diff = max(float((g1 - g2).abs().max()) for g1, g2 in zip(_grads(full), _grads(acc), strict=True))
    assert diff > 1e-3


def test_bn_running_stats_move_once_per_chunk():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4))
    views = torch.randn(16, 3, 2, 2)
    ref = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4))
    ref.load_state_dict(model.state_dict())
    grad_cached_backward(model, _head(model), views, _nt, 8)
    for c in views.split(8):
        ref(c)
    torch.testing.assert_close(model[2].running_mean, ref[2].running_mean)
    with pytest.raises(ValueError, match="chunk"):
        grad_cached_backward(model, _head(model), views, _nt, 0)


def test_pretrain_with_grad_cache_runs(tmp_path):
    from probclr.config import load_config
    from probclr.train.pretrain import pretrain

    cfg = load_config(None, ["model.convnet_widths=[8, 16]", "optim.warmup_epochs=0", "model.proj_dim=16",
                             "optim.epochs=1", "optim.batch_size=64", "optim.grad_cache_chunk=32"])
    res = pretrain(cfg, tmp_path / "gc")
    assert res.final_loss is not None and res.final_loss == res.final_loss


def test_a_last_chunk_of_one_view_joins_the_chunk_before():
    views = torch.randn(16, 3, 2, 2)
    assert [c.shape[0] for c in chunks(views, 3)] == [3, 3, 3, 3, 4]
    assert [c.shape[0] for c in chunks(views, 5)] == [5, 5, 6]
    assert [c.shape[0] for c in chunks(views, 16)] == [16]
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4))  # BN: one view alone would fail
    loss, _ = grad_cached_backward(model, _head(model), views, _nt, 3)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=">= 2 views"):
        grad_cached_backward(model, _head(model), views, _nt, 1)


def test_pretrain_with_a_chunk_that_would_leave_one_view_alone(tmp_path):
    from clihelp import bad, ok

    ok(["pretrain", "--batch-size", "8", "--epochs", "1", "--set", "optim.grad_cache_chunk=3", "--set",
        "data.train_limit=64", "--set", "model.convnet_widths=[8, 16]", "--out", str(tmp_path / "r")])
    bad(["pretrain", "--set", "optim.grad_cache_chunk=1", "--out", str(tmp_path / "one")],
        "optim.grad_cache_chunk must be >= 2 (views; batch norm needs two per chunk) or null, got 1")
