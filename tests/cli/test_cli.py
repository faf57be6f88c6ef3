import json

import pytest
from clihelp import bad, ok
from typer.testing import CliRunner

runner = CliRunner()
TINY = ["--set", "model.convnet_widths=[8, 16]", "--set", "optim.warmup_epochs=0", "--set", "model.proj_dim=16"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    ok(["pretrain", "--epochs", "2", "--batch-size", "64", "--out", str(out), *TINY])
    return out


def test_pretrain_writes_run_dir(tiny_run):
    assert (tiny_run / "checkpoints" / "last.pt").is_file()
    assert len((tiny_run / "metrics.jsonl").read_text().splitlines()) == 2
    assert "pretrain" in json.loads((tiny_run / "provenance.json").read_text())["command"]


def test_evaluate_writes_results(tiny_run):
    out = ok(["evaluate", "--run", str(tiny_run), "--fraction", "0.1", "--fraction", "1.0", "--seeds", "2",
              "--probe", "linear", "--probe", "knn"])
    assert "linear" in out and "knn" in out
    res = json.loads((tiny_run / "eval" / "last" / "results.json").read_text())
    assert {r["fraction"] for r in res["rows"]} == {0.1, 1.0} and len(res["rows"]) == 8
    assert len(res["checkpoint_sha256"]) == 64 and "git_sha" in res["provenance"]
    assert res["provenance"]["command"].startswith("probclr evaluate --run")
    assert (tiny_run / "eval" / "last" / "results.csv").read_text().startswith("method,probe,fraction")
    # the frozen outputs are cached, one file per split (label pool, test): a second evaluation reuses them
    feats = sorted((tiny_run / "embeddings" / "cache").glob("*.pt"))
    assert len(feats) == 2
    mtimes = [f.stat().st_mtime_ns for f in feats]
    ok(["evaluate", "--run", str(tiny_run), "--fraction", "0.5", "--seeds", "1", "--probe", "knn"])
    assert [f.stat().st_mtime_ns for f in feats] == mtimes


def test_supervised_resumes_finished_points(tmp_path):
    out = tmp_path / "sup"
    args = ["supervised", "--fraction", "0.1", "--seeds", "1", "--steps", "5", "--out", str(out), *TINY]
    ok(args)
    point = next((out / "points").glob("*.json"))
    before = point.read_text()
    ok(args)
    assert point.read_text() == before
    assert json.loads((out / "results.json").read_text())["rows"][0]["method"] == "supervised"


def test_demo_end_to_end(tmp_path):
    out = ok(["demo", "--out", str(tmp_path / "demo"), *TINY, "--set", "optim.epochs=1",
              "--set", "eval.fractions=[0.1, 1.0]", "--set", "eval.seeds=1", "--set", "supervised.steps=3"])
    assert "simclr / linear" in out and "supervised / end-to-end" in out
    assert (tmp_path / "demo" / "accuracy_vs_fraction.png").stat().st_size > 1000
    # a progress line for every stage and every label fraction, the supervised stage included
    for line in ("1/4 SimCLR pretraining", "4/4 supervised", "simclr: linear, knn at 10 % labels",
                 "random-init: linear, knn at 100 % labels", "supervised: 1 trainings at 10 % labels (1/2)",
                 "supervised: 1 trainings at 100 % labels (2/2)"):
        assert line in out, line
    sup = json.loads((tmp_path / "demo" / "supervised" / "results.json").read_text())
    assert sorted({r["fraction"] for r in sup["rows"]}) == [0.1, 1.0]


@pytest.mark.parametrize(
    "args,match",
    [
        (["pretrain", "--batch-size", "1"], "optim.batch_size must be in [2, 1e+07]"),
        (["pretrain", "--set", "optim.lrr=1"], "optim.lrr"),
        (["pretrain", "--set", "optim.lr=abc"], "optim.lr must be a number"),
        (["pretrain", "--dataset", "mnist"], "data.dataset must be one of"),
        (["pretrain", "--dataset", "cifar10", "--data-dir", "/nonexistent dir/ü"], "--download"),
        (["pretrain", "--dataset", "imagefolder"], "--data-dir"),
        (["pretrain", "--config", "/no/such.yaml"], "does not exist"),
        (["evaluate", "--run", "/no/such/run"], "does not exist"),
        (["supervised", "--fraction", "0"], "eval.fractions[0] must be in (0, 1], got 0"),
        (["supervised", "--fraction", "1.5"], "eval.fractions[0] must be in (0, 1], got 1.5"),
    ],
)
def test_bad_input_one_line_exit_2(args, match, tmp_path):
    if "--out" not in args and args[0] in ("pretrain", "supervised"):
        args = [*args, "--out", str(tmp_path / "o")]
    lines = bad(args, match)
    assert len(lines) == 1, lines
    assert not (tmp_path / "o" / "checkpoints" / "last.pt").exists()


def test_evaluate_bad_fraction_and_empty_run(tiny_run, tmp_path):
    assert len(bad(["evaluate", "--run", str(tiny_run), "--fraction", "-0.5"], "(0, 1]")) == 1
    (tmp_path / "empty").mkdir()
    assert len(bad(["evaluate", "--run", str(tmp_path / "empty")], "holds no checkpoint")) == 1


def test_bad_image_folder_names_the_file(tmp_path):
    d = tmp_path / "imgs" / "a"
    d.mkdir(parents=True)
    (d / "x.png").write_bytes(b"")
    lines = bad(["pretrain", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "imgs"), "--out",
                 str(tmp_path / "o")], "x.png")
    assert len(lines) == 1


@pytest.mark.parametrize(
    "args,match",
    [
        (["pretrain", "--epochs", "abc"], "--epochs"),
        (["pretrain", "--bogus"], "--bogus"),
        (["nosuch"], "nosuch"),
        (["evaluate", "--run", "/no/such dir"], "does not exist"),
    ],
)
def test_console_entry_point_usage_errors_are_one_line(args, match):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in res.stderr, res.stderr


def test_pretrain_new_loss_flag(tmp_path):
    ok(["pretrain", "--new-loss", "--epochs", "1", "--batch-size", "64", "--out", str(tmp_path / "p"), *TINY,
        "--set", "loss.samples=2"])
    line = json.loads((tmp_path / "p" / "metrics.jsonl").read_text().splitlines()[0])
    assert "kappa_mean" in line
    assert "mc_infonce" in (tmp_path / "p" / "config.yaml").read_text()
    ok(["evaluate", "--run", str(tmp_path / "p"), "--fraction", "0.5", "--seeds", "1", "--probe", "knn"])


def test_embed_exports_mu_kappa_and_labels(tmp_path):
    import torch

    ok(["pretrain", "--new-loss", "--epochs", "1", "--batch-size", "64", "--out", str(tmp_path / "p"), *TINY,
        "--set", "loss.samples=2"])
    out = ok(["embed", "--run", str(tmp_path / "p")])
    d = torch.load(tmp_path / "p" / "embeddings" / "last.pt", weights_only=True)
    n = d["test.labels"].shape[0]
    assert d["test.mu"].shape == (n, 16) and d["test.kappa"].shape == (n,) and d["test.h"].shape == (n, 16)
    torch.testing.assert_close(d["test.mu"].norm(dim=1), torch.ones(n))
    assert (d["train.kappa"] >= 1.0).all() and "embeddings" in out
    ok(["embed", "--run", str(tiny_run_path(tmp_path))])  # an NT-Xent run: mu, no kappa
    d2 = torch.load(tiny_run_path(tmp_path) / "embeddings" / "last.pt", weights_only=True)
    assert "test.kappa" not in d2 and d2["test.mu"].shape[1] == 16


def tiny_run_path(tmp_path):
    out = tmp_path / "nt"
    if not (out / "checkpoints" / "last.pt").exists():
        ok(["pretrain", "--epochs", "1", "--batch-size", "64", "--out", str(out), *TINY])
    return out


def test_bench_reports_all_four_rates(tmp_path):
    out = tmp_path / "b.json"
    ok(["bench", *TINY, "--set", "optim.batch_size=32", "--steps", "2", "--warmup", "1", "--workers", "0",
        "--out", str(out)])
    res = json.loads(out.read_text())
    assert set(res["images_per_s"]) == {"augment", "model_ceiling", "full_step", "peer_dataloader"}
    assert all(v > 0 for v in res["images_per_s"].values()) and res["batch_size"] == 32
    assert res["ratios"]["full_vs_peer"] == pytest.approx(
        res["images_per_s"]["full_step"] / res["images_per_s"]["peer_dataloader"])


@pytest.mark.parametrize("seeds", ["-2", "0"])
def test_a_seed_count_below_one_is_refused_at_the_door(tmp_path, seeds):
    bad(["analyze", "--run", str(tmp_path / "run"), "--seeds", seeds], "--seeds must be >= 1")
    bad(["supervised", "--seeds", seeds, "--out", str(tmp_path / "sup")], "eval.seeds must be in [1, 1000]")
    assert not (tmp_path / "run").exists() and not (tmp_path / "sup").exists()
