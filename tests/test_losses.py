import math

import pytest
import torch
import torch.nn.functional as F

from probclr.losses import nt_xent


def slow_nt_xent(z_a, z_b, t):
    """Eq. 1 of Chen et al. 2020, literally, one anchor at a time."""
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        sims = [(z[i] @ z[k]).item() / t for k in range(n2) if k != i]
        total += -(z[i] @ z[j]).item() / t + math.log(sum(math.exp(s) for s in sims))
    return total / n2


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 8, 0.1), (16, 128, 0.5), (7, 4, 2.0)])
def test_matches_slow_loop(n, d, t):
    g = torch.Generator().manual_seed(n * d)
    z_a, z_b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(z_a, z_b, t).item() == pytest.approx(slow_nt_xent(z_a, z_b, t), rel=1e-5)


def test_closed_form_identical_views_orthogonal():
    # N orthonormal directions, both views equal: positive sim 1, all other sims 0 (2N-2 of them)
    n, t = 4, 0.5
    z = torch.eye(n, 8)
    expected = -1 / t + math.log(math.exp(1 / t) + (2 * n - 2))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-6)


def test_scale_invariant_and_symmetric():
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    base = nt_xent(z_a, z_b)
    assert nt_xent(3 * z_a, 0.1 * z_b).item() == pytest.approx(base.item(), rel=1e-5)
    assert nt_xent(z_b, z_a).item() == pytest.approx(base.item(), rel=1e-5)


@pytest.mark.parametrize("t", [1e-3, 0.05, 100.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_finite_at_extreme_temperatures(t, dtype):
    g = torch.Generator().manual_seed(1)
    z_a = torch.randn(8, 16, generator=g).to(dtype).requires_grad_()
    z_b = torch.randn(8, 16, generator=g).to(dtype).requires_grad_()
    loss = nt_xent(z_a, z_b, t)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z_a.grad).all() and torch.isfinite(z_b.grad).all()


def test_low_temperature_limit_is_hard_margin():
    # as t -> 0, loss * t -> max(0, max_{k != i} sim_ik - sim_ij) averaged: finite in log space
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert nt_xent(z_a, z_b, 1e-4).item() == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize(
    "z_a,z_b,t,match",
    [
        (torch.randn(1, 4), torch.randn(1, 4), 0.5, "N >= 2"),
        (torch.randn(3, 4), torch.randn(2, 4), 0.5, "shape"),
        (torch.randn(3), torch.randn(3), 0.5, "shape"),
        (torch.randn(3, 4), torch.randn(3, 4), 0.0, "temperature"),
        (torch.randn(3, 4), torch.randn(3, 4), -1.0, "temperature"),
    ],
)
def test_bad_input(z_a, z_b, t, match):
    with pytest.raises(ValueError, match=match):
        nt_xent(z_a, z_b, t)
