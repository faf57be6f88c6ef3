"""The validation split: disjoint from label subsets and test, stratified, deterministic; --split val never
reads test labels; kNN probabilities fitted on the holdout; the probe converges to scikit-learn's optimum."""

import json

import pytest
import torch
from clihelp import bad, ok

from probclr.config import DataConfig, load_config
from probclr.data.fractions import label_subset
from probclr.data.sources import load_splits
from probclr.data.validation import resolve_val_size, validation_indices
from probclr.errors import ProbclrError
from probclr.eval.evaluate import evaluate_run
from probclr.train.pretrain import pretrain

TINY = ["data.dataset=digits", "optim.batch_size=64", "model.convnet_widths=[8, 16]", "optim.warmup_epochs=0",
        "model.proj_dim=16", "optim.epochs=1", "supervised.steps=4", "eval.fractions=[0.1]", "eval.seeds=1"]


def test_split_is_stratified_deterministic_and_exact():
    labels = torch.arange(10).repeat_interleave(torch.tensor([50, 60, 70, 80, 90, 100, 110, 120, 130, 190]))
    pool, val = validation_indices(labels, 100, seed=0)
    assert val.numel() == 100 and pool.numel() == labels.numel() - 100
    assert set(pool.tolist()).isdisjoint(val.tolist()) and set(pool.tolist()) | set(val.tolist()) == set(range(1000))
    share = torch.bincount(labels[val], minlength=10).double() / 100
    expected = torch.bincount(labels, minlength=10).double() / 1000
    assert (share - expected).abs().max() <= 0.01 + 1e-9  # at most one image off per class
    assert torch.equal(validation_indices(labels, 100, seed=0)[1], val)
    assert not torch.equal(validation_indices(labels, 100, seed=1)[1], val)


def test_default_sizes():
    assert resolve_val_size(DataConfig(dataset="cifar10"), 50_000) == 5000
    assert resolve_val_size(DataConfig(dataset="digits"), 1442) == 144
    assert resolve_val_size(DataConfig(dataset="digits", val_size=0), 1437) == 0


def test_digits_split_disjoint_from_label_subsets_and_test():
    s = load_splits(DataConfig(dataset="digits"))
    n = s.pretrain.images.shape[0]
    assert s.val is not None and s.val.images.shape[0] == n // 10
    assert n == s.train.images.shape[0] + n // 10  # pretraining still sees every image
    pool_rows = {bytes(im.numpy()) for im in s.train.images}
    val_rows = [bytes(im.numpy()) for im in s.val.images]
    test_rows = {bytes(im.numpy()) for im in s.test.images}
    assert sum(r in pool_rows for r in val_rows) <= 2  # digits has a couple of duplicate images, no more
    assert sum(r in test_rows for r in val_rows) <= 2
    for fraction in (0.02, 0.1, 1.0):
        idx = label_subset(s.train.labels, fraction, 0)
        assert idx.max() < s.train.images.shape[0]  # drawn from the pool only


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("val") / "run"
    pretrain(load_config(None, TINY), out)
    return out


def test_split_val_never_reads_test_labels(run, monkeypatch):
    """With --split val the test labels are garbage and the test images noise: the results do not change."""
    import probclr.eval.evaluate as ev

    cfg = load_config(None, TINY).eval
    clean, path = evaluate_run(run, cfg, split="val")
    assert path.parent.name == "val" and json.loads(path.read_text())["split"] == "val"
    real = ev.load_splits

    def poisoned(data_cfg):
        s = real(data_cfg)
        garbage = s.test._replace(images=torch.randint(0, 256, s.test.images.shape, dtype=torch.uint8),
                                  labels=torch.full_like(s.test.labels, 10**6))
        return s._replace(test=garbage)

    monkeypatch.setattr(ev, "load_splits", poisoned)
    again, _ = evaluate_run(run, cfg, split="val")
    assert [r.accuracy for r in again] == [r.accuracy for r in clean]
    assert [r.nll for r in again] == [r.nll for r in clean]


def test_split_val_and_test_differ_and_sizes_are_recorded(run):
    cfg = load_config(None, TINY).eval
    _, p_val = evaluate_run(run, cfg, split="val")
    _, p_test = evaluate_run(run, cfg, split="test")
    meta = json.loads(p_test.read_text())
    sizes = meta["split_sizes"]
    assert sizes["val"] == sizes["pretrain"] // 10 and sizes["label_pool"] == sizes["pretrain"] - sizes["val"]
    assert p_val != p_test and p_test.parent.name == "last"


def test_evaluate_split_both_writes_the_val_and_test_results(run):
    out = ok(["evaluate", "--run", str(run), "--split", "both"])
    val, test = run / "eval" / "last" / "val" / "results.json", run / "eval" / "last" / "results.json"
    assert f"results: {val}" in out and f"results: {test}" in out
    assert json.loads(val.read_text())["split"] == "val" and json.loads(test.read_text())["split"] == "test"
    assert json.loads(test.read_text())["scored_together"] == ["val", "test"]


def test_bad_split_and_val_size(run, tmp_path):
    bad(["evaluate", "--run", str(run), "--split", "train"], "--split must be one of test, val, both, got 'train'")
    bad(["pretrain", "--set", "data.val_size=-1", "--out", str(tmp_path / "a")],
        "data.val_size must be in [0, 1e+09] or null, got -1")
    bad(["supervised", "--set", "data.val_size=1442", "--out", str(tmp_path / "b")], "data.val_size must be in [0, 1441]")
    bad(["supervised", "--set", "data.val_size=1438", "--out", str(tmp_path / "c")], "would leave class")
    bad(["evaluate", "--run", str(run), "--split", "val", "--set", "data.val_size=0"], "no validation split")
    bad(["evaluate", "--run", str(run), "--set", "optim.lr=0.5"], "evaluate cannot change optim.lr")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_supervised_tune_chooses_on_val(tmp_path):
    out = tmp_path / "sup"
    ok(["supervised", "--set", "data.dataset=digits", "--set", "model.convnet_widths=[8, 16]", "--fraction", "0.1",
        "--seeds", "1", "--set", "supervised.steps=3", "--set", "supervised.grid_lr=[0.05, 0.2]",
        "--set", "supervised.grid_weight_decay=[0.0005]", "--set", "supervised.grid_steps=[3, 6]", "--tune",
        "--out", str(out)])
    meta = json.loads((out / "results.json").read_text())
    chosen = meta["tuned_on_val"]["0.1"]
    assert chosen["lr"] in (0.05, 0.2) and chosen["steps"] in (3, 6)
    tuning = [json.loads(p.read_text()) for p in (out / "tuning").glob("*.json")]
    assert len(tuning) == 4 and max(r["accuracy"] for r in tuning) == chosen["val_accuracy"]
    assert f"lr={chosen['lr']:g}" in meta["rows"][0]["detail"]
    assert len(list((out / "tuning").glob("*.pt"))) == 4  # seed 0 of the chosen point is reused, not retrained
    plain = tmp_path / "plain"  # ... and equals a fresh training with the chosen settings
    ok(["supervised", "--set", "data.dataset=digits", "--set", "model.convnet_widths=[8, 16]", "--fraction", "0.1",
        "--seeds", "1", "--set", f"supervised.steps={chosen['steps']}", "--set", f"supervised.lr={chosen['lr']}",
        "--set", "supervised.weight_decay=0.0005", "--out", str(plain)])
    fresh = json.loads((plain / "results.json").read_text())["rows"][0]
    assert fresh["accuracy"] == meta["rows"][0]["accuracy"]
    assert fresh["nll"] == pytest.approx(meta["rows"][0]["nll"], abs=1e-6)  # memory layout: float rounding only


def test_knn_fitted_temperature_improves_holdout_nll():
    """Synthetic clusters: the fitted (T, eps) gives a lower NLL on fresh (held-out) queries than T = 0.07
    unsmoothed and than very flat weights, and the chosen k never exceeds 10 % of the bank."""
    from probclr.probes.knn import KNNProbe, train_knn_probe
    from probclr.probes.metrics import score

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=g) * 1.2

    def sample(n):
        y = torch.randint(0, 5, (n,), generator=g)
        return torch.relu(centres[y] + torch.randn(n, 8, generator=g)), y

    x, y = sample(600)
    xq, yq = sample(2000)
    fitted = train_knn_probe(x, y, 5, k=200)
    assert fitted.k == 60 and "leave-one-out" in fitted.selection
    nll_fit = score(fitted.probs(xq), yq).nll
    for t, eps in ((0.07, 0.0), (1.0, 0.0)):
        fixed = KNNProbe(fitted.bank, fitted.bank_y, 5, fitted.k, t, eps, "fixed")
        assert nll_fit < score(fixed.probs(xq), yq).nll
    assert score(fitted.probs(xq), yq).ece < 0.05


def test_probe_objective_matches_sklearn_at_small_weight_decay(cifar_slice):
    """Real CIFAR pixels (300 x 192), weight decay down to 1e-5: the converged objective is within 1e-5
    (relative) of scikit-learn's optimum, and the fit records its iterations and gradient norm."""
    from sklearn.linear_model import LogisticRegression

    from probclr.probes.linear import fit_logistic, logistic_loss_and_grad

    s = load_splits(DataConfig(dataset="cifar10", data_dir=str(cifar_slice), val_size=0))
    keep = torch.cat([torch.nonzero(s.train.labels == c).squeeze(1)[:30] for c in range(10)])  # 30 per class
    x = torch.nn.functional.avg_pool2d(s.train.images[keep].float() / 255, 4).flatten(1)  # (300, 192)
    x = (x - x.mean(0)) / x.std(0, unbiased=False)
    y = s.train.labels[keep]
    onehot = torch.nn.functional.one_hot(y, 10).double()
    for wd in (1e-2, 1e-5):
        fit = fit_logistic(x, y, 10, wd)
        assert fit.converged and fit.iterations > 0 and fit.grad_norm < 1e-4
        sk = LogisticRegression(C=1 / (len(x) * wd), max_iter=20000, tol=1e-9).fit(x.double().numpy(), y.numpy())
        w_sk = torch.from_numpy(sk.coef_.T.copy())
        b_sk = torch.from_numpy(sk.intercept_.copy())
        ref = float(logistic_loss_and_grad(x.double().T.contiguous(), onehot, w_sk, b_sk, wd)[0])
        ours = float(logistic_loss_and_grad(x.double().T.contiguous(), onehot, fit.weight.double(), fit.bias.double(),
                                            wd)[0])
        assert abs(ours - ref) / ref < 1e-5, (wd, ours, ref)


def test_unconverged_probe_says_so():
    from probclr.probes.linear import train_linear_probe

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 20, generator=g), torch.randint(0, 3, (200,), generator=g)
    p = train_linear_probe(x, y, 3, (1e-5,), 0.2, 0, max_iter=2)
    assert not p.converged and "NOT converged" in p.describe() and p.iterations == 2
    with pytest.raises(ProbclrError):
        validation_indices(torch.tensor([0, 0, 1, 1]), 4, 0)


def test_leave_one_out_neighbours_exclude_self_against_a_slow_loop():
    from probclr.probes.knn import loo_neighbours

    g = torch.Generator().manual_seed(3)
    bank = torch.nn.functional.normalize(torch.randn(25, 4, generator=g), dim=1)
    bank[7] = bank[3]  # a duplicate: each of the pair must still drop itself, not its twin
    top, idx = loo_neighbours(bank, 4)
    for i in range(25):
        sims = sorted(((float(bank[i] @ bank[j]), j) for j in range(25) if j != i), reverse=True)[:4]
        assert i not in idx[i].tolist()
        torch.testing.assert_close(top[i], torch.tensor([s for s, _ in sims]), atol=1e-6, rtol=0)
