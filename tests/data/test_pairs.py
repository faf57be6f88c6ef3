"""Soft-label positive pairs (probclr.data.pairs): the partner distribution against its closed form, the
label-aware negative weights and the weighted losses against slow loops, and pretraining with them:
deterministic, resumed mid-epoch bit for bit, refused in one line when the soft labels are wrong."""

import json
import math
import os
import signal

import numpy as np
import pytest
import torch

from probclr.config import load_config
from probclr.data.pairs import SoftLabelPairs, pair_generator
from probclr.errors import ConfigError, DataError
from probclr.io import read_jsonl
from probclr.model.losses import mc_infonce, nt_xent, shrinkage_nt_xent_global
from probclr.train.pretrain import Stopped, pretrain
from tests.clihelp import bad, ok
from tests.runhelp import assert_same_weights

TINY = ["data.dataset=digits", "optim.batch_size=64", "model.convnet_widths=[8, 16]", "optim.warmup_epochs=0",
        "model.proj_dim=16"]
DIGITS_PRETRAIN = 1442  # pretraining images of the embedded digits dataset


def _probs(n: int, c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, 0.5), size=n)
    p[0] = np.eye(c)[0]  # a unanimous row
    return p


def _pairs(p: np.ndarray, tmp_path) -> SoftLabelPairs:
    np.save(tmp_path / "p.npy", p)
    return SoftLabelPairs.load(tmp_path / "p.npy", p.shape[0], torch.device("cpu"))


def test_partners_follow_the_soft_label_process(tmp_path):
    """P(partner j | anchor i) = sum_c p_i(c) p_j(c) / sum_k p_k(c): the empirical shares of 40,000 draws per
    anchor against that closed form (total variation below 0.015)."""
    p = _probs(7, 3)
    pairs = _pairs(p, tmp_path)
    expected = p @ (p / p.sum(axis=0, keepdims=True)).T  # (N, N) rows: anchor i's partner distribution
    gen = torch.Generator().manual_seed(0)
    for i in (0, 3, 6):
        drawn = pairs.partners(torch.full((40_000,), i), gen).numpy()
        shares = np.bincount(drawn, minlength=7) / drawn.size
        assert 0.5 * np.abs(shares - expected[i]).sum() < 0.015, (i, shares, expected[i])


def test_negative_weights_match_a_loop(tmp_path):
    p = _probs(9, 4, seed=1)
    pairs = _pairs(p, tmp_path)
    anchors, partners = torch.tensor([0, 2, 5, 8]), torch.tensor([1, 2, 7, 0])
    got = pairs.negative_log_weights(anchors, partners).exp()
    rows = [*anchors.tolist(), *partners.tolist()]
    for i in range(8):
        for k in range(8):
            want = 1.0 if k == (i + 4) % 8 else max(0.0, 1 - float(np.dot(p[rows[i]], p[rows[k]])))
            assert math.isclose(float(got[i, k]), want, rel_tol=1e-5, abs_tol=1e-6), (i, k)
    # a unanimous anchor and a unanimous candidate of its class: surely the same class, no negative at all
    same = pairs.negative_log_weights(torch.tensor([0, 0]), torch.tensor([0, 0]))
    assert same[0, 1] == float("-inf") and same[0, 2] == 0.0


def _slow_weighted_nt_xent(z: torch.Tensor, w: torch.Tensor, t: float) -> float:
    z = torch.nn.functional.normalize(z.double(), dim=1)
    n2 = z.shape[0]
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        den = sum(float(w[i, k]) * math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i)
        total += -(float(z[i] @ z[pos]) / t - math.log(den))
    return total / n2


def test_weighted_nt_xent_matches_a_slow_loop():
    gen = torch.Generator().manual_seed(3)
    z_a, z_b = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    w = torch.rand(10, 10, generator=gen)
    w[torch.arange(10), torch.arange(10).roll(5)] = 1.0
    w[0, 3] = 0.0  # a candidate that is not a negative at all
    got = float(nt_xent(z_a, z_b, 0.3, log_weight=w.log()))
    assert math.isclose(got, _slow_weighted_nt_xent(torch.cat([z_a, z_b]), w, 0.3), rel_tol=1e-5)
    assert float(nt_xent(z_a, z_b, 0.3, log_weight=torch.zeros(10, 10))) == pytest.approx(float(nt_xent(z_a, z_b, 0.3)))


def test_weighted_mc_infonce_reduces_to_weighted_nt_xent_at_infinite_kappa():
    gen = torch.Generator().manual_seed(4)
    mu_a = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen), dim=1)
    mu_b = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen), dim=1)
    lw = torch.rand(12, 12, generator=gen).log()
    big = torch.full((6,), 1e9)
    want = float(nt_xent(mu_a, mu_b, 0.5, log_weight=lw))
    assert float(mc_infonce(mu_a, big, mu_b, big, 0.5, samples=4, log_weight=lw)) == pytest.approx(want, rel=1e-4)
    assert float(shrinkage_nt_xent_global(mu_a, big, mu_b, big, 0.5, log_weight=lw)) == pytest.approx(want, rel=1e-4)
    torch.manual_seed(0)
    plain = mc_infonce(mu_a, torch.full((6,), 5.0), mu_b, torch.full((6,), 5.0), 0.5, samples=4)
    torch.manual_seed(0)
    zero = mc_infonce(mu_a, torch.full((6,), 5.0), mu_b, torch.full((6,), 5.0), 0.5, samples=4,
                      log_weight=torch.zeros(12, 12))
    assert float(plain) == pytest.approx(float(zero), rel=1e-6)


def test_partners_depend_on_seed_epoch_and_step_only(tmp_path):
    pairs = _pairs(_probs(50, 5), tmp_path)
    anchors = torch.arange(20)
    cpu = torch.device("cpu")
    a = pairs.partners(anchors, pair_generator(cpu, 7, 1, 3))
    assert torch.equal(a, pairs.partners(anchors, pair_generator(cpu, 7, 1, 3)))
    assert not torch.equal(a, pairs.partners(anchors, pair_generator(cpu, 7, 1, 4)))


@pytest.fixture(scope="module")
def digit_soft_labels(tmp_path_factory):
    """Soft labels for the digits' pretraining images: 0.8 on the true digit, 0.02 on each other."""
    from probclr.data.sources import load_splits

    cfg = load_config(None, TINY)
    labels = load_splits(cfg.data).pretrain.labels.numpy()
    p = np.full((labels.size, 10), 0.02)
    p[np.arange(labels.size), labels] += 0.8
    path = tmp_path_factory.mktemp("soft") / "soft.npy"
    np.save(path, p)
    return path


def _soft_cfg(path, *more):
    return load_config(None, [*TINY, "data.pairs=soft_labels", f"data.soft_labels={path}", "loss.name=mc_infonce",
                              "loss.samples=4", *more])


def test_soft_label_pretraining_resumes_mid_epoch_bit_for_bit(digit_soft_labels, tmp_path):
    cfg = _soft_cfg(digit_soft_labels, "optim.epochs=2")
    pretrain(cfg, tmp_path / "full")

    def stop_at_step_30(p):  # SIGINT inside the loop: the run checkpoints mid-epoch 2 and stops
        if p.step == 30:
            os.kill(os.getpid(), signal.SIGINT)

    cfg_every = _soft_cfg(digit_soft_labels, "optim.epochs=2", "run.log_every=1")
    with pytest.raises(Stopped):
        pretrain(cfg_every, tmp_path / "cut", on_progress=stop_at_step_30)
    pretrain(cfg_every, tmp_path / "cut", resume=True)
    assert_same_weights(tmp_path / "full", tmp_path / "cut")
    assert [r["loss"] for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")] == \
        [r["loss"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    sha = json.loads((tmp_path / "full" / "provenance.json").read_text())["soft_labels_sha256"]
    assert len(sha) == 64


def test_soft_labels_change_training_and_a_changed_file_is_refused_on_resume(digit_soft_labels, tmp_path):
    mine = tmp_path / "soft.npy"
    mine.write_bytes(digit_soft_labels.read_bytes())
    pretrain(_soft_cfg(mine, "optim.epochs=1"), tmp_path / "soft")
    pretrain(load_config(None, [*TINY, "loss.name=mc_infonce", "loss.samples=4", "optim.epochs=1"]), tmp_path / "aug")
    soft = read_jsonl(tmp_path / "soft" / "metrics.jsonl")[0]["loss"]
    assert soft != read_jsonl(tmp_path / "aug" / "metrics.jsonl")[0]["loss"]
    ok(["evaluate", "--run", str(tmp_path / "soft"), "--seeds", "1", "--fraction", "1.0", "--probe", "linear"])
    ok(["report", str(tmp_path / "soft"), "--out", str(tmp_path / "rep")])
    assert "used labels in pretraining" in (tmp_path / "rep" / "summary.md").read_text()
    np.save(mine, np.load(mine)[::-1].copy())  # the same path, other contents
    with pytest.raises(DataError, match="resume with the same file"):
        pretrain(_soft_cfg(mine, "optim.epochs=1"), tmp_path / "soft", resume=True)


def test_bad_soft_label_configs_are_one_line_errors(digit_soft_labels, tmp_path):
    with pytest.raises(ConfigError, match="needs data.soft_labels"):
        load_config(None, [*TINY, "data.pairs=soft_labels"])
    with pytest.raises(ConfigError, match="set data.pairs=soft_labels"):
        load_config(None, [*TINY, f"data.soft_labels={digit_soft_labels}"])
    with pytest.raises(ConfigError, match="data.train_limit 100"):
        _soft_cfg(digit_soft_labels, "data.train_limit=100")
    p = np.load(digit_soft_labels)
    cases = {
        "rows": (p[:-1], "1441 rows but there are 1442 pretraining images"),
        "negative": (np.where(np.arange(p.size).reshape(p.shape) == 25, -0.1, p), "row 2 holds a negative"),
        "sum": (p * 1.5, "row 0 sums to 1.5"),
        "shape": (p[:, :1], "C >= 2 classes"),
    }
    for name, (arr, match) in cases.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, arr)
        out = bad(["pretrain", "--dataset", "digits", "--epochs", "1", "--set", "data.pairs=soft_labels", "--set",
                   f"data.soft_labels={path}", "--out", str(tmp_path / f"run-{name}")], match)
        assert len(out) == 1 and not (tmp_path / f"run-{name}").exists(), (name, out)
    bad(["pretrain", "--dataset", "digits", "--set", "data.pairs=soft_labels", "--set",
         f"data.soft_labels={tmp_path / 'absent.npy'}", "--out", str(tmp_path / "r")], "is not a file")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    bad(["pretrain", "--dataset", "digits", "--set", "data.pairs=soft_labels", "--set",
         f"data.soft_labels={tmp_path / 'junk.npy'}", "--out", str(tmp_path / "r")], "not a readable .npy")
