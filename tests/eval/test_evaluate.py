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
    feats = next((other / "embeddings" / "cache").glob("*.pt"))
    state = torch.load(feats, weights_only=True)
    state["key"] = "0" * 64  # pretend it came from a different checkpoint or other images
    torch.save(state, feats)
    with pytest.raises(ProbclrError, match="does not match its checkpoint and images"):
        evaluate_run(other, load_config(None, [*TINY, "eval.fractions=[0.1]", "eval.seeds=1"]).eval)


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
