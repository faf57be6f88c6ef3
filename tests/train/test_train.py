import math
import pickle

import pytest
import torch

from probclr.config import load_config
from probclr.errors import ProbclrError
from probclr.io import read_jsonl
from probclr.run.checkpoint import CheckpointError, load_checkpoint
from probclr.train.pretrain import TrainingError, pretrain
from tests.runhelp import assert_same_weights

TINY = ["data.dataset=digits", "optim.batch_size=64", "model.convnet_widths=[8, 16]", "optim.warmup_epochs=0",
        "model.proj_dim=16"]


def test_loss_falls_on_real_cifar(cifar_slice, tmp_path):
    """A short SimCLR run on 600 real CIFAR-10 images: the NT-Xent loss falls from ln(2B-1)."""
    cfg = load_config("configs/cifar10_cpu.yaml", [
        f"data.data_dir={cifar_slice}", "optim.epochs=8", "optim.batch_size=100", "optim.warmup_epochs=1",
        "run.seed=0",
    ])
    res = pretrain(cfg, tmp_path / "run")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert first > 4.5 and last < first - 0.25, (first, last)
    assert res.steps == 48


def test_resume_equals_uninterrupted(tmp_path):
    cfg = load_config(None, [*TINY, "optim.epochs=3"])
    pretrain(cfg, tmp_path / "full")
    short = load_config(None, [*TINY, "optim.epochs=3"])
    # interrupt after epoch 1 by training 1 epoch of the 3-epoch schedule, then resume
    import probclr.train.pretrain as train_mod

    calls = {"n": 0}

    def stop_after_first_epoch(p):
        calls["n"] += 1
        if p.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(short, tmp_path / "resumed", on_progress=stop_after_first_epoch)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["epoch"] == 1
    train_mod.pretrain(short, tmp_path / "resumed", resume=True)
    a, b = assert_same_weights(tmp_path / "full", tmp_path / "resumed")
    assert a["epoch"] == b["epoch"] == 3
    assert a["metrics"][-1]["loss"] == b["metrics"][-1]["loss"]
    assert [r["epoch"] for r in read_jsonl(tmp_path / "resumed" / "metrics.jsonl")] == [1, 2, 3]


def test_run_directory_describes_itself(tmp_path):
    cfg = load_config(None, [*TINY, "optim.epochs=1"])
    pretrain(cfg, tmp_path / "r", command=["probclr", "pretrain", "--epochs", "1"])
    r = tmp_path / "r"
    import json

    prov = json.loads((r / "provenance.json").read_text())
    assert prov["command"] == "probclr pretrain --epochs 1"
    assert {"torch", "python", "probclr"} <= set(prov["versions"]) and "git_sha" in prov and prov["device"]
    assert load_config(r / "config.yaml") == cfg
    state = load_checkpoint(r / "checkpoints" / "last.pt")
    assert state["config"]["optim"]["batch_size"] == 64 and state["epoch"] == 1


def test_refuses_to_overwrite_or_resume_wrongly(tmp_path):
    cfg = load_config(None, [*TINY, "optim.epochs=1"])
    pretrain(cfg, tmp_path / "r")
    with pytest.raises(ProbclrError, match="already holds a run"):
        pretrain(cfg, tmp_path / "r")
    other = load_config(None, [*TINY, "optim.epochs=1", "optim.lr=0.1"])
    with pytest.raises(CheckpointError, match="optim.lr"):
        pretrain(other, tmp_path / "r", resume=True)
    with pytest.raises(ProbclrError, match="nothing to resume"):
        pretrain(cfg, tmp_path / "empty", resume=True)


def test_nan_loss_stops_with_the_step_named(tmp_path, monkeypatch):
    _nan_every(monkeypatch, set(range(3, 1000)))  # a diverging run (an absurd lr is now refused by the config)
    cfg = load_config(None, [*TINY, "optim.epochs=2"])
    with pytest.raises(TrainingError, match="at step 4 "):
        pretrain(cfg, tmp_path / "r")
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["epoch"] == 0  # last good one kept


def _nan_every(monkeypatch, calls):
    """Make the loss NaN at the given (0-based) training steps, as a numerical fault would."""
    import probclr.train.step as step_mod

    real, count = step_mod.contrastive_loss, {"n": 0}

    def faulty(out, cfg, phase="joint", log_weight=None):
        loss, kappa = real(out, cfg, phase, log_weight)
        n = count["n"]
        count["n"] += 1
        return (loss * float("nan"), kappa) if n in calls else (loss, kappa)

    monkeypatch.setattr(step_mod, "contrastive_loss", faulty)


def test_nonfinite_steps_are_skipped_and_counted_when_configured(tmp_path, monkeypatch):
    """optim.skip_nonfinite = K: up to K NaN steps are skipped (no update) and counted per epoch; weights stay
    finite; without it the first NaN stops the run."""
    _nan_every(monkeypatch, {1, 5, 30})
    cfg = load_config(None, [*TINY, "optim.epochs=2", "optim.skip_nonfinite=3"])
    pretrain(cfg, tmp_path / "r")
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    steps = state["step"] // 2  # steps per epoch
    counts = [m["skipped_steps"] for m in state["metrics"]]
    assert counts == [sum(c < steps for c in (1, 5, 30)), sum(steps <= c < 2 * steps for c in (1, 5, 30))]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert all(math.isfinite(m["loss"]) for m in state["metrics"])


def test_too_many_nonfinite_steps_stop_with_the_count(tmp_path, monkeypatch):
    _nan_every(monkeypatch, {2, 4})
    cfg = load_config(None, [*TINY, "optim.epochs=2", "optim.skip_nonfinite=1"])
    with pytest.raises(TrainingError, match="non-finite at 2 steps, the last at step 5 .*skip_nonfinite = 1"):
        pretrain(cfg, tmp_path / "r")
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["epoch"] == 0  # last good one kept


def test_batch_larger_than_dataset(tmp_path):
    cfg = load_config(None, [*(o for o in TINY if not o.startswith("optim.batch_size=")), "optim.batch_size=5000"])
    with pytest.raises(ProbclrError, match="exceeds"):
        pretrain(cfg, tmp_path / "r")


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PAYLOAD_RAN",))


def test_malicious_checkpoint_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    torch.save({"format": "probclr-checkpoint-1", "x": Payload()}, bad)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(bad)
    assert not (tmp_path / "PAYLOAD_RAN").exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_new_loss_trains_logs_kappa_and_resumes_exactly(tmp_path):
    args = [*TINY, "optim.epochs=2", "loss.name=mc_infonce", "loss.samples=2", "loss.temperature=0.2"]
    cfg = load_config(None, args)
    pretrain(cfg, tmp_path / "full")
    rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert all(1.0 <= r["kappa_q10"] <= r["kappa_q50"] <= r["kappa_q90"] <= 1e4 for r in rows)
    assert all(r["kappa_std"] >= 0 and r["loss"] > 0 for r in rows)

    def stop(p):
        if p.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, tmp_path / "resumed", on_progress=stop)
    pretrain(cfg, tmp_path / "resumed", resume=True)
    assert_same_weights(tmp_path / "full", tmp_path / "resumed")


def test_shrinkage_baseline_trains_a_kappa_without_sampling(tmp_path):
    """loss.name=shrinkage: the probabilistic head, kappa as a per-view temperature; deterministic given the
    views (two runs with the same seed agree exactly, as the Monte-Carlo loss's runs do too)."""
    args = [*TINY, "optim.epochs=1", "loss.name=shrinkage", "loss.temperature=0.2", "loss.kl_weight=0.001"]
    cfg = load_config(None, args)
    pretrain(cfg, tmp_path / "a")
    pretrain(cfg, tmp_path / "b")
    rows = read_jsonl(tmp_path / "a" / "metrics.jsonl")
    assert 1.0 <= rows[0]["kappa_q10"] <= rows[0]["kappa_q90"] <= 1e4 and math.isfinite(rows[0]["loss"])
    assert rows[0]["loss"] == read_jsonl(tmp_path / "b" / "metrics.jsonl")[0]["loss"]


def test_two_phases_train_mu_first_then_only_kappa(tmp_path):
    """loss.phases=mu_then_kappa: in the mu phase the kappa branch gets no gradient (its weights stay at
    their initial values); in the kappa phase the direction branch's last layer stays where the mu phase
    left it. Checked on the saved checkpoints of each epoch."""
    args = [*TINY, "optim.epochs=2", "loss.name=mc_infonce", "loss.samples=2", "loss.phases=mu_then_kappa",
            "loss.mu_fraction=0.5", "run.keep_checkpoints=true"]
    pretrain(load_config(None, [*TINY, "optim.epochs=0", "loss.name=mc_infonce"]), tmp_path / "init")  # initial weights
    pretrain(load_config(None, args), tmp_path / "r")
    init = load_checkpoint(tmp_path / "init" / "checkpoints" / "last.pt")["model"]
    e1 = load_checkpoint(tmp_path / "r" / "checkpoints" / "epoch_0001.pt")["model"]
    e2 = load_checkpoint(tmp_path / "r" / "checkpoints" / "epoch_0002.pt")["model"]
    kappa_w, mu_w = "head.concentration.3.weight", "head.direction.net.3.weight"
    assert torch.equal(e1[kappa_w], init[kappa_w]) and not torch.equal(e1[mu_w], init[mu_w])
    assert torch.equal(e2[mu_w], e1[mu_w]) and not torch.equal(e2[kappa_w], e1[kappa_w])
