"""The analysis pipeline and report end to end on a tiny --new-loss run of the embedded digits."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from clihelp import bad, ok
from typer.testing import CliRunner

runner = CliRunner()
TINY = ["--set", "model.convnet_widths=[8, 16]", "--set", "optim.warmup_epochs=0", "--set", "model.proj_dim=16",
        "--set", "loss.samples=2", "--set", "eval.fractions=[0.1, 1.0]", "--set", "run.monitor_every=1",
        "--set", "run.monitor_bank=200", "--set", "run.monitor_queries=50"]
FAST = ["--seeds", "2", "--ambiguity-images", "60", "--map-points", "80"]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    run = tmp_path_factory.mktemp("an") / "prob"
    ok(["pretrain", "--new-loss", "--epochs", "1", "--batch-size", "64", "--out", str(run), *TINY])
    bad(["analyze", "--run", str(run), *FAST], "probclr embed --run")  # no embeddings yet: says which command
    ok(["embed", "--run", str(run)])
    ok(["evaluate", "--run", str(run), "--seeds", "1", "--probe", "linear"])
    ok(["analyze", "--run", str(run), *FAST, "--maps", "tsne,umap"])
    return run


def test_analysis_tables_and_figures(analysed):
    a = analysed / "analysis"
    cal = np.genfromtxt(a / "calibration.csv", delimiter=",", names=True, dtype=None, encoding=None)
    probes = set(cal["probe"])
    assert probes == {"linear", "linear + temperature", "Bayesian linear (Laplace)", "linear + kappa temperature"}
    assert set(cal["fraction"]) == {0.1, 1.0}
    assert ((cal["ece"] >= 0) & (cal["ece"] <= 1)).all()
    unc = (a / "uncertainty.csv").read_text()
    for score in ("kappa", "max_softmax", "neg_entropy", "feature_norm", "knn_agreement"):
        assert score in unc
    ret = np.genfromtxt(a / "retrieval.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert list(ret["metric"]) == ["Recall@1", "MAP@R", "R-AUROC", "R-AUROC", "R-AUROC"] and set(ret["score"][2:]) == {
        "kappa", "feature_norm", "proj_norm"}
    assert ((ret["value"] >= 0) & (ret["value"] <= 1)).all()
    amb = (a / "ambiguity.csv").read_text()
    for factor in ("crop area", "centre crop side", "gaussian_noise", "gaussian_blur", "contrast"):
        assert factor in amb
    per = np.genfromtxt(a / "ambiguity_per_image.csv", delimiter=",", names=True, dtype=None, encoding=None)
    scores = {"kappa", "feature_norm", "proj_norm", "max_softmax"}
    assert set(per["score"]) == scores and len(per) == len(scores) * (1 + 2 * 3) and (per["n"] == 60).all()
    rates = per["value"][per["statistic"] != "mean per-image Spearman"]
    assert ((rates >= 0) & (rates <= 1)).all()
    for fig in ("reliability", "calibration", "uncertainty", "ambiguity", "embedding_map"):
        assert (a / "figures" / f"{fig}.png").stat().st_size > 1000
    maps = pd.read_csv(a / "embedding_map.csv")  # t-SNE and UMAP of the same images, by class and by kappa
    tsne, umap = maps[maps["method"] == "tsne"], maps[maps["method"] == "umap"]
    assert len(tsne) == len(umap) == 80 and list(tsne["class"]) == list(umap["class"])
    assert list(tsne["kappa"]) == list(umap["kappa"]) and (maps["kappa"] > 0).all()
    meta = json.loads((a / "analysis.json").read_text())
    assert meta["provenance"]["command"].startswith("probclr analyze") and meta["timings"]["total_s"] > 0


def test_report_renders_every_section(analysed, tmp_path):
    ok(["report", str(analysed), "--out", str(tmp_path / "rep"), "--title", "tiny report"])
    page = (tmp_path / "rep" / "report.html").read_text()
    for section in ("Accuracy across label fractions", "Calibration across label fractions", "Uncertainty quality",
                    "Certainty vs ambiguity", "Reproduce", "probclr pretrain", "probclr analyze",
                    "kNN monitor on the validation split", "Retrieval in the embedding space"):
        assert section in page, section
    assert page.count("data:image/png;base64,") >= 7  # self-contained: every figure embedded
    assert "every deterministic score on misclassification AUROC" in page
    import re

    numbers = [int(n) for n in re.findall(r"<h2>(\d+)\. ", page)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 3  # numbered sections never skip
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert md.startswith("# tiny report") and "| fraction |" in md


def test_report_and_analyze_bad_input(analysed, tmp_path):
    bad(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad(["report", str(empty), "--out", str(tmp_path / "r")], "probclr evaluate --run")
    wrong = tmp_path / "h.npy"
    np.save(wrong, np.full((10, 10), 0.1))
    bad(["analyze", "--run", str(analysed), "--cifar10h", str(wrong), *FAST], "has shape (10, 10), expected (10000, 10)")
    assert not (tmp_path / "r").exists()


def test_analyze_on_the_validation_split(analysed):
    """--split val: every table on the validation images (what variants are chosen on), in analysis-val;
    CIFAR-10H (test images) refused with it; the test analysis is untouched."""
    before = (analysed / "analysis" / "analysis.json").read_bytes()
    bad(["analyze", "--run", str(analysed), "--split", "val", "--cifar10h", "x.npy", *FAST], "--split test")
    bad(["analyze", "--run", str(analysed), "--split", "train", *FAST], "unknown split 'train'; valid: test, val")
    ok(["analyze", "--run", str(analysed), "--split", "val", *FAST])
    a = analysed / "analysis-val"
    meta = json.loads((a / "analysis.json").read_text())
    assert meta["split"] == "val" and (analysed / "analysis" / "analysis.json").read_bytes() == before
    emb = torch.load(analysed / "embeddings" / "last.pt", weights_only=True)
    ret = np.genfromtxt(a / "retrieval.csv", delimiter=",", names=True, dtype=None, encoding=None)
    from analysis.measures.retrieval import retrieval

    assert ret["value"][0] == pytest.approx(retrieval(emb["val.mu"], emb["val.labels"]).recall_at_1)


def test_report_summarises_runs_across_seeds(analysed, tmp_path):
    """Two analysed runs of one loss: the report gives each measure's mean and t-interval over runs, and
    kappa's verdicts against the best label-free baseline."""
    import shutil

    twin = tmp_path / "twin"
    shutil.copytree(analysed, twin)
    ok(["report", str(analysed), str(twin), "--out", str(tmp_path / "rep")])
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Across pretraining seeds" in md and "best label-free baseline" in md
    assert "| mc_infonce | Recall@1 |" in md


def test_old_embeddings_are_refused_with_the_command_that_remakes_them(analysed, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(analysed, copy)
    path = copy / "embeddings" / "last.pt"
    emb = torch.load(path, weights_only=True)
    del emb["format"]
    torch.save(emb, path)
    bad(["analyze", "--run", str(copy), *FAST], "older probclr (format 1, need 3); re-run `probclr embed --run")


def _three_class_data(n, gen):
    y = torch.randint(0, 3, (n,), generator=gen)
    x = torch.randn(n, 5, generator=gen) + torch.nn.functional.one_hot(y, 5).float()[:, :5] * 1.5
    return x, y


def test_bayesian_probe_is_centred_on_the_map_and_predicts_probabilities():
    from analysis.measures.bayes_probe import BayesianProbe
    from probclr.probes.linear import train_linear_probe
    from probclr.probes.metrics import score

    gen = torch.Generator().manual_seed(0)
    x, y = _three_class_data(300, gen)
    probe = train_linear_probe(x, y, 3, (1e-3, 1e-2), 0.2, 0)
    before = probe.weight.clone()
    bp = BayesianProbe(x, y, 3, probe)
    assert torch.equal(probe.weight, before)  # the posterior must not write into the MAP probe's tensors
    w, b = bp.loc
    torch.testing.assert_close(w, probe.weight, atol=1e-6, rtol=0)  # mean = MAP
    torch.testing.assert_close(b, probe.bias, atol=1e-6, rtol=0)
    xt, yt = _three_class_data(2000, gen)
    p = bp.probs(xt)
    torch.testing.assert_close(p.sum(1), torch.ones(2000, dtype=p.dtype))
    s_map, s_bayes = score(probe.probs(xt), yt), score(p, yt)
    assert abs(s_bayes.accuracy - s_map.accuracy) < 0.01 and s_bayes.ece < 0.08
    assert s_bayes.nll <= s_map.nll + 5e-3  # the predictive is no worse than the MAP (to Monte-Carlo noise)
    assert (torch.diagonal(bp.posterior.covariance_matrix) > 0).all()


def test_posterior_scale_zero_is_the_map_and_the_holdout_picks_a_scale_of_the_grid():
    from analysis.measures.bayes_probe import POSTERIOR_SCALES, BayesianProbe, heldout_posterior_scale
    from probclr.probes.linear import train_linear_probe

    gen = torch.Generator().manual_seed(3)
    x, y = _three_class_data(60, gen)  # few labels: the regime where the full Laplace spread can hurt
    x = torch.cat([x, torch.randn(60, 20, generator=gen)], 1)  # plus 20 noise features
    probe = train_linear_probe(x, y, 3, (1e-4, 1e-3), 0.2, 0)
    xt, _ = _three_class_data(500, gen)
    xt = torch.cat([xt, torch.randn(500, 20, generator=gen)], 1)
    torch.testing.assert_close(BayesianProbe(x, y, 3, probe, 0.0).probs(xt), probe.probs(xt).double(), atol=1e-5, rtol=0)
    scale = heldout_posterior_scale(x, y, 3, probe, 0.2, 0)
    assert scale in POSTERIOR_SCALES
    # reference: a fresh refit and one Laplace probe per scale, the holdout NLL of each, by hand; then the
    # paired one-standard-error rule by hand
    from analysis.measures.calibration import holdout_refit

    refit = holdout_refit(x, y, 3, probe, 0.2, 0)
    hold_y = y[refit.hold_idx]

    def nll(s):
        p = BayesianProbe(x[refit.fit_idx], y[refit.fit_idx], 3, refit.probe, s).probs(x[refit.hold_idx], seed=0)
        return -p[torch.arange(len(hold_y)), hold_y].clamp_min(1e-12).log()

    losses = {s: nll(s) for s in POSTERIOR_SCALES}
    best = min(POSTERIOR_SCALES, key=lambda s: float(losses[s].mean()))
    within = [s for s in POSTERIOR_SCALES
              if float((losses[s] - losses[best]).mean()) <= float((losses[s] - losses[best]).std()) / len(hold_y) ** 0.5]
    assert scale == min(within)
    assert heldout_posterior_scale(x, y, 3, probe, 0.2, 0, rule="min") == min(
        POSTERIOR_SCALES, key=lambda s: (round(float(losses[s].mean()), 6), s))
    # the shared refit gives the same choice as the function's own
    assert heldout_posterior_scale(x, y, 3, probe, 0.2, 0, refit=refit) == scale
    with pytest.raises(ValueError, match="rule"):
        heldout_posterior_scale(x, y, 3, probe, 0.2, 0, rule="max")
    with pytest.raises(ValueError, match="scale"):
        BayesianProbe(x, y, 3, probe, -1.0)
    with pytest.raises(ValueError, match="predictive"):
        BayesianProbe(x, y, 3, probe, 1.0, "laplace-bridge")


def test_one_se_rule_keeps_the_smallest_key_not_measurably_worse():
    from analysis.measures.bayes_probe import one_se_choice

    gen = torch.Generator().manual_seed(0)
    base = torch.rand(400, generator=gen, dtype=torch.float64)
    noise = torch.randn(400, generator=gen, dtype=torch.float64)
    noise = 0.01 * (noise - noise.mean()) / noise.std()  # exactly mean 0, std 0.01: paired SE 0.0005
    # 0.3 is best; 0.1 is worse by 0.002 on average (4 SE) -> measurably worse;
    # 0.0 is worse by 0.0001 (0.2 SE) -> kept, being the smallest
    assert one_se_choice({0.0: base + 1e-4 + noise, 0.1: base + 2e-3 + noise, 0.3: base}) == 0.0
    assert one_se_choice({0.0: base + 0.05, 0.1: base + 2e-3 + noise, 0.3: base}) == 0.3
    assert one_se_choice({0.0: base + 0.05, 0.1: base + 1e-5 * noise, 0.3: base}) == 0.1  # mean diff 0


def test_probit_predictive_matches_its_moments_and_the_monte_carlo_predictive():
    from analysis.measures.bayes_probe import BayesianProbe
    from probclr.probes.linear import train_linear_probe

    gen = torch.Generator().manual_seed(1)
    x, y = _three_class_data(80, gen)
    probe = train_linear_probe(x, y, 3, (1e-3,), 0.2, 0)
    xt, _ = _three_class_data(300, gen)
    bp = BayesianProbe(x, y, 3, probe, 1.0, "probit")
    mean, var = bp.logit_moments(xt)  # (300, 3) each
    # reference: the logits of many posterior draws, their sample mean and variance
    draws = bp.posterior.sample((20000,)).reshape(20000, *bp.shape)  # (S, D+1, C)
    x1 = torch.cat([(xt - probe.mean) / probe.std, torch.ones(300, 1)], 1).double()  # (300, D+1)
    logits = torch.einsum("nd,sdc->snc", x1, draws)  # (S, 300, 3)
    centred = logits - logits.mean(2, keepdim=True)  # the softmax's invariant part
    torch.testing.assert_close(mean, centred.mean(0), atol=0.05 * float(var.sqrt().max()), rtol=0)
    torch.testing.assert_close(var, centred.var(0), atol=0, rtol=0.06)
    p = bp.probs(xt)
    torch.testing.assert_close(p.sum(1), torch.ones(300, dtype=p.dtype))
    mc = torch.softmax(logits, 2).mean(0)  # (300, 3) the Monte-Carlo predictive with 20,000 draws
    # the probit approximation is close, not exact (the uncentred variances were 0.4 off here)
    assert float((p - mc).abs().max()) < 0.08 and float((p - mc).abs().mean()) < 0.02
    # no spread: the probit predictive is the MAP's softmax
    torch.testing.assert_close(bp.probs(xt, scale=0.0), probe.probs(xt).double(), atol=1e-5, rtol=0)


def test_laplace_precision_equals_autograd_hessian():
    """The closed-form Hessian of the negative log posterior equals torch.autograd's on a small problem."""
    from analysis.measures.bayes_probe import softmax_hessian

    gen = torch.Generator().manual_seed(1)
    n, d, c = 40, 3, 4
    x1 = torch.cat([torch.randn(n, d, generator=gen, dtype=torch.float64), torch.ones(n, 1, dtype=torch.float64)], 1)
    y = torch.randint(0, c, (n,), generator=gen)
    v0 = torch.randn((d + 1) * c, generator=gen, dtype=torch.float64)

    def nll(v):
        return torch.nn.functional.cross_entropy(x1 @ v.reshape(d + 1, c), y, reduction="sum")

    ref = torch.autograd.functional.hessian(nll, v0)
    ours = softmax_hessian(x1, torch.softmax(x1 @ v0.reshape(d + 1, c), 1), chunk=7)
    torch.testing.assert_close(ours, ref)


def test_temperature_recovers_a_known_temperature():
    from analysis.measures.calibration import fit_temperature, reliability
    from probclr.probes.metrics import ece

    gen = torch.Generator().manual_seed(0)
    true_logits = 2 * torch.randn(20000, 4, generator=gen)
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.05)
    probs = torch.softmax(true_logits, 1)  # perfectly calibrated by construction
    assert ece(probs, labels) < 0.02
    rel = reliability(probs, labels)
    n = rel["count"].sum()
    manual = float(np.nansum(rel["count"] / n * (rel["accuracy"] - rel["confidence"]).abs()))
    assert manual == pytest.approx(ece(probs, labels), abs=1e-9)


def test_ece_matches_torchmetrics_if_installed():
    tm = pytest.importorskip("torchmetrics")
    from probclr.probes.metrics import ece

    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(500, 10, generator=gen), 1)
    labels = torch.randint(0, 10, (500,), generator=gen)
    ref = tm.functional.classification.multiclass_calibration_error(probs, labels, num_classes=10, n_bins=15)
    assert ece(probs, labels) == pytest.approx(float(ref), abs=1e-6)


def test_failed_reanalysis_leaves_the_previous_analysis_whole(analysed, monkeypatch):
    from analysis import analyze as an

    before = {p.relative_to(analysed): p.read_bytes() for p in (analysed / "analysis").rglob("*") if p.is_file()}

    def broken(out):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(an.figures, "analysis_figures", broken)
    with pytest.raises(RuntimeError):
        an.analyze_run(analysed, ["probclr", "analyze"], seeds=2, ambiguity_images=60, map_points=80)
    after = {p.relative_to(analysed): p.read_bytes() for p in (analysed / "analysis").rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in analysed.iterdir() if p.name.startswith(".analysis")]  # no staging folder left


def test_report_keeps_runs_with_the_same_folder_name_apart(analysed, tmp_path):
    import shutil

    for parent in ("a", "b"):
        shutil.copytree(analysed, tmp_path / parent / "prob")
    ok(["report", str(tmp_path / "a" / "prob"), str(tmp_path / "b" / "prob"), "--out", str(tmp_path / "rep")])
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "| a/prob |" in md and "| b/prob |" in md
    bad(["report", str(tmp_path / "a" / "prob"), str(tmp_path / "a" / "prob"), "--out", str(tmp_path / "r2")],
        "is given twice")


def test_report_refuses_runs_of_different_datasets_and_escapes_a_title(analysed, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(analysed, other)
    for f in other.rglob("results.json"):
        meta = json.loads(f.read_text())
        if isinstance(meta.get("run_config"), dict):
            meta["run_config"]["data"]["dataset"] = "cifar10"
            f.write_text(json.dumps(meta))
    bad(["report", str(analysed), str(other), "--out", str(tmp_path / "r")], "different datasets")
    assert not (tmp_path / "r").exists()
    ok(["report", str(analysed), "--out", str(tmp_path / "t"), "--title", "<script>x</script>"])
    assert (tmp_path / "t" / "summary.md").read_text().startswith("# &lt;script&gt;x&lt;/script&gt;")


def test_markdown_tables_escape_pipes_and_round_floats():
    import pandas as pd

    from analysis.reports.report import _md_table

    df = pd.DataFrame({"score": ["kappa | feature_norm (partial)", "kappa"], "rho": [0.0648778484, float("nan")],
                       "n": [10000.0, 45000.0]})
    lines = _md_table(df).splitlines()
    # every row has as many unescaped separators as the header
    assert {line.replace("\\|", "").count("|") for line in lines} == {4}
    assert lines[2] == "| kappa \\| feature_norm (partial) | 0.06488 | 10000 |"
    assert lines[3] == "| kappa | – | 45000 |"


def test_maps_of_few_points_adapt_and_too_few_are_refused():
    from analysis.measures.embedding_maps import MIN_MAP_POINTS, embedding_map, map_perplexity

    assert map_perplexity(2000) == 30.0 and map_perplexity(12) < 12  # t-SNE needs perplexity < n
    x = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    assert embedding_map(x, "tsne").shape == (12, 2)  # the 12-image validation split that used to fail
    with pytest.raises(ValueError, match=f"at least {MIN_MAP_POINTS}"):
        embedding_map(x[:MIN_MAP_POINTS - 1], "tsne")


def test_umap_is_seeded_and_refused_in_one_line_without_its_package(tmp_path, monkeypatch):
    import analysis.measures.embedding_maps as em

    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
    a, b, c = em.embedding_map(x, "umap", seed=0), em.embedding_map(x, "umap", seed=0), em.embedding_map(x, "umap", 1)
    assert a.shape == (40, 2) and (a == b).all() and not (a == c).all()
    for maps, match in (("tsne,pca", "unknown map 'pca'"), ("tsne,tsne", "each map once")):
        lines = bad(["analyze", "--run", str(tmp_path / "run"), "--maps", maps], match)
        assert len(lines) == 1
    monkeypatch.setattr(em, "umap_available", lambda: False)
    lines = bad(["analyze", "--run", str(tmp_path / "run"), "--maps", "tsne,umap"], "pip install 'probclr[umap]'")
    assert len(lines) == 1 and not (tmp_path / "run").exists()


def test_the_report_in_a_real_browser(analysed, tmp_path):
    """Headless Chromium opens the generated report: every figure loads, no console error, the tables are
    there. Skipped, with the reason, where no browser is installed (CI installs Debian's chromium)."""
    import importlib.util
    import sys

    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from report_in_browser import check_report, find_browser

    if find_browser() is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); .ci/run installs it")
    ok(["report", str(analysed), "--out", str(tmp_path / "rep"), "--title", "in a browser"])
    seen = check_report(tmp_path / "rep" / "report.html", tmp_path / "first_screen.png")
    assert seen["images"] >= 6 and seen["images_loaded"] == seen["images"], seen["broken"]
    assert seen["console_errors"] == []
    assert seen["tables"] >= 4 and all(rows >= 2 for rows in seen["table_rows"])
    assert any("Accuracy across label fractions" in h for h in seen["sections"])
    assert (tmp_path / "first_screen.png").stat().st_size > 10_000


@pytest.mark.parametrize("images", [2, 6])
def test_analysis_of_a_handful_of_images_completes_with_undefined_measures_missing(tmp_path, images):
    """With 2 or 6 test and validation images every probe may be right (or wrong) on all of them, Spearman may
    have fewer than 3 pairs, and a map may be impossible: the analysis and the report still complete, each
    undefined measure NaN in its table (a map skipped with its reason, or drawn), never a failed run."""
    run = tmp_path / "r"
    ok(["pretrain", "--new-loss", "--epochs", "1", "--batch-size", "64", "--out", str(run), *TINY,
        "--set", f"data.test_limit={images}", "--set", f"data.val_size={images}"])
    ok(["embed", "--run", str(run)])
    for split in ("test", "val"):
        ok(["analyze", "--run", str(run), "--split", split, "--seeds", "1", "--ambiguity-images", "60"])
    unc = pd.read_csv(run / "analysis" / "uncertainty.csv")
    error_rates = unc["error_rate"].to_numpy()
    undefined = (error_rates == 0) | (error_rates == 1)
    assert unc["auroc"].isna().to_numpy().tolist() == undefined.tolist()
    skipped = json.loads((run / "analysis" / "analysis.json").read_text())["skipped"]
    assert ("embedding maps" in skipped) == (images < 5) != (run / "analysis" / "embedding_map.csv").is_file()
    ok(["report", str(run), "--out", str(tmp_path / "rep")])
