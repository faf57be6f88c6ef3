"""The one frozen-output concept: Embeddings per split, cached once per checkpoint, shared by evaluate and embed."""

import pytest
import torch

from probclr.config import load_config
from probclr.eval.embeddings import Embeddings, embed_images, export_embeddings, load_run_embeddings
from probclr.eval.evaluate import evaluate_run
from probclr.eval.frozen_model import load_model
from probclr.model.forward import embed
from probclr.run.rundir import RunDir
from probclr.train.pretrain import pretrain

TINY = ["model.convnet_widths=[8, 16]", "optim.warmup_epochs=0", "model.proj_dim=8", "optim.batch_size=64",
        "optim.epochs=1", "eval.fractions=[1.0]", "eval.seeds=1", "eval.probes=[knn]"]


@pytest.fixture(scope="module", params=["nt_xent", "mc_infonce"])
def run(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("emb") / "run"
    pretrain(load_config(None, [*TINY, f"loss.name={request.param}", "loss.samples=2"]), root)
    return RunDir(root)


def test_embeddings_match_the_model_run_by_hand(run):
    model = load_model(run.last)
    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    e = embed_images(model, images, batch_size=7, labels=torch.arange(20))
    h, out = model(images.float().div(255).expand(-1, 3, -1, -1))
    torch.testing.assert_close(e.h, h)
    torch.testing.assert_close(e.mu, torch.nn.functional.normalize(out.proj, dim=1))
    torch.testing.assert_close(e.proj_norm, out.proj.norm(dim=1))
    assert (e.kappa is None) == (out.kappa is None)
    torch.testing.assert_close(e.h, embed(model.encoder, images))  # the encoder-only forward agrees
    assert e.labels.tolist() == list(range(20))
    assert set(e.label_free()) == ({"feature_norm", "proj_norm"} | ({"kappa"} if out.kappa is not None else set()))


def test_round_trip_and_damaged_fields_are_refused():
    e = Embeddings(torch.randn(4, 3), torch.randn(4, 2), torch.rand(4), torch.rand(4), torch.arange(4))
    back = Embeddings.from_dict(e.as_dict("val."), "val.")
    for a, b in zip(e, back, strict=True):
        torch.testing.assert_close(a, b)
    assert Embeddings.from_dict(e._replace(kappa=None).as_dict()).kappa is None
    torch.testing.assert_close(e.take(torch.tensor([2, 0])).h, e.h[[2, 0]])
    bad = e.as_dict()
    bad["mu"] = torch.randn(5, 2)
    with pytest.raises(ValueError, match="shape"):
        Embeddings.from_dict(bad)
    bad = e.as_dict()
    bad["labels"] = bad["labels"].float()
    with pytest.raises(ValueError, match="dtypes"):
        Embeddings.from_dict(bad)
    with pytest.raises(ValueError, match="labels"):
        Embeddings.from_dict({k: v for k, v in e.as_dict().items() if k != "labels"})


def test_evaluate_and_embed_share_one_cache_per_checkpoint_and_split(run, monkeypatch):
    for f in (run.root / "embeddings" / "cache").glob("*.pt"):
        f.unlink()
    evaluate_run(run.root, split="val")  # label pool + val
    cached = sorted((run.root / "embeddings" / "cache").glob("*.pt"))
    assert len(cached) == 2
    loads = []
    import probclr.eval.embeddings as mod

    real = mod.load_model
    monkeypatch.setattr(mod, "load_model", lambda p: loads.append(p) or real(p))
    export_embeddings(run.root)  # train and val come from the cache: only test is computed
    assert len(loads) == 1 and len(list((run.root / "embeddings" / "cache").glob("*.pt"))) == 3
    emb = load_run_embeddings(run, run.last)
    export_embeddings(run.root)  # every split cached now: the model is not loaded again
    assert len(loads) == 1
    d = torch.load(cached[0], weights_only=True)
    assert any(torch.equal(d["h"], emb.split(s).h) for s in ("train", "val"))
    assert set(emb.splits) == {"train", "val", "test"} and emb.split("test").h.shape[1] == 16
