import pytest
import torch

from probclr.config import load_config
from probclr.errors import ProbclrError
from probclr.eval.evaluate import evaluate_run
from probclr.eval.frozen_model import load_encoder
from probclr.model.forward import embed
from probclr.run.checkpoint import file_digest
from probclr.train.pretrain import pretrain

TINY = ["data.dataset=digits", "optim.batch_size=64", "model.convnet_widths=[8, 16]", "optim.warmup_epochs=0",
        "model.proj_dim=16", "optim.epochs=1", "supervised.steps=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "run"
    pretrain(load_config(None, TINY), out)
    return out


def test_frozen_encoder_unchanged_by_feature_extraction_and_probing(run):
    ckpt = run / "checkpoints" / "last.pt"
    digest = file_digest(ckpt)
    enc = load_encoder(ckpt)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    embed(enc, torch.randint(0, 256, (50, 3, 16, 16), dtype=torch.uint8))  # BN running stats must not move
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    rows, _ = evaluate_run(run, load_config(None, [*TINY, "eval.fractions=[0.1]", "eval.seeds=1"]).eval,
                           finetune=True)
    assert file_digest(ckpt) == digest
    assert {r.probe for r in rows} == {"linear", "knn", "finetune"}


def test_feature_cache_from_another_checkpoint_is_refused(run, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run, other)
    cfg = load_config(None, [*TINY, "eval.fractions=[0.1]", "eval.seeds=1"]).eval
    evaluate_run(other, cfg)  # writes the feature cache (whichever test ran first on this worker)
    feats = next((other / "embeddings" / "cache").glob("*.pt"))
    state = torch.load(feats, weights_only=True)
    state["key"] = "0" * 64  # pretend it came from a different checkpoint or other images
    torch.save(state, feats)
    with pytest.raises(ProbclrError, match="does not match its checkpoint and images"):
        evaluate_run(other, cfg)


def test_fraction_leaving_a_class_empty(run, tmp_path, monkeypatch):
    import probclr.eval.evaluate as ev

    real = ev.load_splits

    def drop_class_three(cfg):
        s = real(cfg)
        keep = s.train.labels != 3
        from probclr.data.splits import ImageSet, Splits

        tr = ImageSet(s.train.images[keep], s.train.labels[keep], s.train.classes)
        return Splits(tr, tr, s.test)

    monkeypatch.setattr(ev, "load_splits", drop_class_three)
    with pytest.raises(ProbclrError, match="class 3 has no labeled"):
        evaluate_run(run, load_config(None, [*TINY, "eval.fractions=[0.1]", "eval.seeds=1"]).eval)


def test_knn_fitted_once_where_label_seeds_draw_the_same_subset(monkeypatch):
    """At 100 % labels every seed draws the whole pool: the seed-free kNN is fitted once and its rows equal a
    fit per seed; at 50 % the seeds' subsets differ and each is fitted."""
    import probclr.eval.evaluate as ev
    from probclr.eval.embeddings import Embeddings
    from probclr.probes.knn import train_knn_probe

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    h = torch.randn(60, 8, generator=gen) + 2.0 * torch.nn.functional.one_hot(labels, 8).float()  # (60, 8)
    pool = Embeddings(h, h, h.norm(dim=1), None, labels)
    query = Embeddings(h[:30] + 0.1, h[:30], h[:30].norm(dim=1), None, labels[:30])
    cfg = load_config(None, ["eval.fractions=[0.5, 1.0]", "eval.seeds=3", "eval.probes=[knn]"]).eval
    calls: list[int] = []

    def counted(x, *a, **k):
        calls.append(int(x.shape[0]))
        return train_knn_probe(x, *a, **k)

    monkeypatch.setattr(ev, "train_knn_probe", counted)
    rows = ev.probe_rows(pool, query, cfg, "simclr", 3)
    assert calls == [30, 30, 30, 60]  # three different halves, the whole pool once
    monkeypatch.setattr(ev, "SEEDLESS_PROBES", frozenset())
    calls.clear()
    fresh = ev.probe_rows(pool, query, cfg, "simclr", 3)
    assert calls == [30, 30, 30, 60, 60, 60]
    assert rows == fresh
    assert len({r.detail for r in rows if r.fraction == 1.0}) == 1


def test_linear_refit_shared_where_label_seeds_draw_the_same_subset(monkeypatch):
    """At 100 % labels the seeds hold out different parts to choose the weight decay, but the refit on the
    whole subset is the same computation: made once per chosen decay, rows equal a refit per seed."""
    import probclr.eval.evaluate as ev
    import probclr.probes.linear as lin
    from probclr.eval.embeddings import Embeddings
    from probclr.probes.metrics import score

    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(60) % 3
    h = torch.randn(60, 8, generator=gen) + 1.5 * torch.nn.functional.one_hot(labels, 8).float()  # (60, 8)
    pool = Embeddings(h, h, h.norm(dim=1), None, labels)
    query = Embeddings(h[:30] + 0.2, h[:30], h[:30].norm(dim=1), None, labels[:30])
    cfg = load_config(None, ["eval.fractions=[1.0]", "eval.seeds=3", "eval.probes=[linear]",
                             "eval.weight_decays=[0.001, 0.1]"]).eval
    sizes: list[int] = []
    real_fit = lin.fit_logistic

    def counted(x, *a, **k):
        sizes.append(int(x.shape[0]))
        return real_fit(x, *a, **k)

    monkeypatch.setattr(lin, "fit_logistic", counted)
    rows = ev.probe_rows(pool, query, cfg, "simclr", 3)
    chosen = {r.detail.split(" ")[0] for r in rows}
    assert sizes.count(60) == len(chosen) < 3 and sizes.count(48) == 6  # 2 decays x 3 holdouts of 12
    for r in rows:  # a refit per seed, without sharing, gives the same rows
        p = lin.train_linear_probe(h, labels, 3, cfg.weight_decays, cfg.holdout, r.seed, cfg.max_iter, cfg.probe_tol)
        assert p.describe() == r.detail and score(p.probs(query.h), query.labels).nll == r.nll


def test_several_splits_from_one_fit_equal_separate_evaluations(run, monkeypatch):
    """evaluate_run_splits fits each probe (and fine-tunes each model) once and scores validation and test from
    it: each split's rows and results file are those of a separate evaluate_run, at half the fits."""
    import json

    import probclr.eval.evaluate as ev
    from probclr.probes.linear import train_linear_probe

    cfg = load_config(None, [*TINY, "eval.fractions=[0.1, 1.0]", "eval.seeds=2", "eval.probes=[linear, knn, mlp]",
                             "eval.mlp_epochs=2"]).eval
    fits: list[int] = []

    def counted(x, *a, **k):
        fits.append(int(x.shape[0]))
        return train_linear_probe(x, *a, **k)

    monkeypatch.setattr(ev, "train_linear_probe", counted)
    apart = {split: ev.evaluate_run(run, cfg, finetune=True, split=split) for split in ("val", "test")}
    separate_fits = len(fits)
    fits.clear()
    together = ev.evaluate_run_splits(run, cfg, finetune=True, scored=("val", "test"))
    assert len(fits) == separate_fits // 2 > 0
    for split in ("val", "test"):
        rows, path = together[split]
        assert rows == apart[split][0] and path == apart[split][1]
        assert {r.probe for r in rows} == {"linear", "knn", "mlp", "finetune"}
        assert json.loads(path.read_text())["split"] == split
    assert together["val"][0] != together["test"][0]  # two splits really scored
    with pytest.raises(ValueError, match="distinct splits"):
        ev.evaluate_run_splits(run, cfg, scored=("test", "test"))
