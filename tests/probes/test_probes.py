import numpy as np
import pytest
import torch

from probclr.probes.knn import KNNProbe, capped_k, train_knn_probe
from probclr.probes.linear import fit_logistic, train_linear_probe, train_mlp_probe
from probclr.probes.metrics import ece, score


def blobs(n_per=40, d=16, k=4, sep=6.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * sep
    y = torch.arange(k).repeat_interleave(n_per)
    x = centres[y] + torch.randn(len(y), d, generator=g)
    return x, y


def test_linear_probe_separable_reaches_near_100():
    x, y = blobs()
    xt, yt = blobs(seed=1)
    xt = xt - blobs(seed=1)[0] + blobs(seed=0)[0]  # same centres, fresh noise
    p = train_linear_probe(x, y, 4, (1e-4, 1e-2), 0.2, 0)
    assert score(p.probs(x), y).accuracy == 1.0
    assert score(p.probs(xt), yt).accuracy >= 0.97
    assert "held-out" in p.selection


def test_linear_probe_shuffled_labels_is_chance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 32, generator=g)
    y = torch.randint(0, 10, (2000,), generator=g)
    xt, yt = torch.randn(4000, 32, generator=g), torch.randint(0, 10, (4000,), generator=g)
    p = train_linear_probe(x, y, 10, (1e-3, 1e-1), 0.2, 0)
    assert abs(score(p.probs(xt), yt).accuracy - 0.1) < 0.03


def test_same_optimum_as_sklearn_on_real_pixels(cifar_slice):
    """Logistic regression on real CIFAR pixels: our L-BFGS objective equals scikit-learn's (C = 1 / (n wd))."""
    from sklearn.linear_model import LogisticRegression

    from probclr.config import DataConfig
    from probclr.data.sources import load_splits

    s = load_splits(DataConfig(dataset="cifar10", data_dir=str(cifar_slice)))
    pool = torch.nn.functional.avg_pool2d
    feats = lambda im: pool(im.float() / 255, 4).flatten(1)  # (N, 192)  # noqa: E731
    x, xt = feats(s.train.images), feats(s.test.images)
    mean, std = x.mean(0), x.std(0, unbiased=False)
    x, xt = (x - mean) / std, (xt - mean) / std
    wd = 1e-2
    w, b, *_ = fit_logistic(x.double(), s.train.labels, 10, wd, max_iter=1000)
    sk = LogisticRegression(C=1 / (len(x) * wd), max_iter=5000, tol=1e-10).fit(x.numpy(), s.train.labels.numpy())
    ours = (xt.double() @ w + b).argmax(1).numpy()
    agree = (ours == sk.predict(xt.numpy())).mean()
    assert agree >= 0.99
    np.testing.assert_allclose(w.T.numpy() - w.T.numpy().mean(0), sk.coef_ - sk.coef_.mean(0), atol=2e-3)


def slow_knn(bank, bank_y, q, k, t, c):
    out = []
    bank = torch.nn.functional.normalize(bank, dim=1)
    for v in torch.nn.functional.normalize(q, dim=1):
        sims = [(float(v @ b), int(y)) for b, y in zip(bank, bank_y, strict=True)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * c
        for sim, y in sims[:k]:
            votes[y] += np.exp(sim / t)
        out.append([v_ / sum(votes) for v_ in votes])
    return torch.tensor(out)


def test_knn_matches_slow_loop():
    x, y = blobs(n_per=10, sep=1.0)
    q, _ = blobs(n_per=3, sep=1.0, seed=3)
    probe = KNNProbe(torch.nn.functional.normalize(x, dim=1), y, 4, 7, 0.1, 0.0, "test")
    ours = probe.probs(q, chunk=5)
    torch.testing.assert_close(ours, slow_knn(x, y, q, 7, 0.1, 4).float(), atol=1e-5, rtol=1e-4)
    smoothed = probe._replace(eps=0.1).probs(q)
    torch.testing.assert_close(smoothed, 0.9 * ours + 0.1 / 4)
    sharp = probe._replace(gamma=2.0).probs(q)
    torch.testing.assert_close(sharp, ours**2 / (ours**2).sum(1, keepdim=True))
    assert capped_k(1000, 40, 0.1) == 4 and capped_k(5, 40, 0.1) == 4 and capped_k(3, 5, 0.1) == 1
    assert train_knn_probe(x, y, 4, k=1000).probs(q).shape == (12, 4)  # k larger than the bank is capped


def test_ece_hand_computed():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1, 0])
    # bins of width 1/15: conf 0.9 -> bin 13, 0.8 -> bin 11, 0.7 -> bin 10, 0.6 -> bin 8; one sample each
    # |acc - conf| = |1-0.9| + |0-0.8| + |1-0.7| + |1-0.6| = 0.1 + 0.8 + 0.3 + 0.4 = 1.6, / 4
    assert ece(probs, labels) == pytest.approx(0.4)
    # two samples sharing a bin: conf 0.95 (right) and 0.96 (wrong): |0.5 - 0.955| * 2 / 2
    probs = torch.tensor([[0.95, 0.05], [0.96, 0.04]])
    assert ece(probs, torch.tensor([0, 1])) == pytest.approx(0.455)
    s = score(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert s.accuracy == 0 and np.isfinite(s.nll) and s.brier == pytest.approx(2.0)


def test_mlp_probe_learns():
    x, y = blobs(sep=3.0)
    m = train_mlp_probe(x, y, 4, 32, 50, 0)
    with torch.no_grad():
        assert score(torch.softmax(m(x), 1), y).accuracy > 0.95


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_manual_gradient_equals_autograd(dtype):
    from probclr.probes.linear import logistic_loss_and_grad

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 7, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (50,), generator=g)
    w = torch.randn(7, 3, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=dtype, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * 0.3 * (w * w).sum()
    ref.backward()
    onehot = torch.nn.functional.one_hot(y, 3).to(dtype)
    loss, gw, gb = logistic_loss_and_grad(x.T.contiguous(), onehot, w.detach(), b.detach(), 0.3)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(loss, ref.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(gw, w.grad, atol=tol, rtol=tol)
    torch.testing.assert_close(gb, b.grad, atol=tol, rtol=tol)


def test_a_small_vote_temperature_never_turns_far_neighbours_into_a_uniform_vote():
    """Weights are exp((sim - the query's best sim) / T): with T = 0.001 and every neighbour at cosine 0.2, the
    nearest neighbour still decides (it used to underflow to a uniform vote: chance accuracy with few labels)."""
    from probclr.probes.knn import vote

    top = torch.tensor([[0.21, 0.20, 0.19], [0.05, 0.30, 0.10]])  # (2, 3) similarities, all far from 1
    labels = torch.tensor([[2, 1, 1], [0, 3, 0]])
    p = vote(top, labels, 4, temperature=0.001)
    assert p.argmax(dim=1).tolist() == [2, 3] and torch.allclose(p.sum(dim=1), torch.ones(2))
    # the shares equal the slow loop's wherever nothing underflows
    q = vote(top, labels, 4, temperature=0.5)
    w = torch.exp(top / 0.5)
    slow = torch.zeros(2, 4).scatter_add_(1, labels, w)
    torch.testing.assert_close(q, slow / slow.sum(dim=1, keepdim=True))
