"""Retrieval metrics against hand-made neighbourhoods and scikit-learn's AUROC."""

import numpy as np
import torch

from analysis.measures.retrieval import r_auroc, retrieval


def test_recall_and_map_at_r_on_hand_made_neighbourhoods():
    # 1-D points on a circle: class 0 at angles 0, 0.1, 0.2; class 1 at 3.0, 3.1; an impostor of class 1 at 0.05
    angles = torch.tensor([0.0, 0.1, 0.2, 3.0, 3.1, 0.05])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    emb = torch.stack([angles.cos(), angles.sin()], dim=1)
    r = retrieval(emb, labels, chunk=4)
    # nearest neighbours: 0->5 (wrong), 1->5 (wrong: 0.05 is 0.05 away, 0.0 and 0.2 are 0.1), 2->1, 3->4, 4->3, 5->0
    assert r.nn_correct.tolist() == [False, False, True, True, True, False]
    assert r.recall_at_1 == 3 / 6
    # MAP@R by hand (R = 2 for every item): item 0 ranks 5,1 -> P@2 = 1/2 -> AP = (0 + 1/2) / 2 = 0.25
    # 1: 5,(0|2 tie -> 0) -> 0.25; 2: 1,5 -> 0.5; 3: 4,... -> (1 + 0)/2 = 0.5; 4: 3 -> 0.5; 5: 0,1 -> 0
    assert abs(r.map_at_r - (0.25 + 0.25 + 0.5 + 0.5 + 0.5 + 0.0) / 6) < 1e-6


def test_r_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    certainty = torch.randn(500, generator=g)
    correct = (certainty + torch.randn(500, generator=g)) > 0
    assert abs(r_auroc(certainty, correct) - roc_auc_score(correct.numpy(), certainty.numpy())) < 1e-12
    assert np.isclose(r_auroc(-certainty, correct), 1 - roc_auc_score(correct.numpy(), certainty.numpy()))


def test_partial_spearman_against_rank_residuals():
    from scipy import stats

    from analysis.measures.uncertainty import partial_spearman

    g = np.random.default_rng(0)
    z = g.normal(size=2000)
    x, y = z + 0.3 * g.normal(size=2000), z + 0.3 * g.normal(size=2000)
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))

    def resid(a, b):
        return a - np.polyval(np.polyfit(b, a, 1), b)

    ref = np.corrcoef(resid(rx, rz), resid(ry, rz))[0, 1]
    assert abs(partial_spearman(x, y, z) - ref) < 1e-9
    assert stats.spearmanr(x, y)[0] > 0.8 and abs(partial_spearman(x, y, z)) < 0.1  # z explains it all


def test_human_table_on_synthetic_soft_labels():
    from analysis.analyze import human_table
    from analysis.measures.human_labels import human_entropy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(600, 10, generator=g) * torch.rand(600, 1, generator=g) * 6
    human = torch.softmax(logits, 1).double()
    human[:200] = torch.nn.functional.one_hot(human[:200].argmax(1), 10).double()  # unanimous images
    certainty = -human_entropy(human) + 0.05 * torch.randn(600, generator=g, dtype=torch.float64)
    table = human_table(human, {"kappa": certainty, "feature_norm": torch.randn(600, generator=g).double()},
                        {"max_softmax": torch.rand(600, generator=g).double()})
    assert list(table.uses_labels) == [False, False, True, False]  # the probe's score is marked apart
    kappa = table[table.score == "kappa"].iloc[0]
    assert kappa.rho > 0.9 and kappa.low <= kappa.rho <= kappa.high and kappa.auroc_not_unanimous > 0.9
    noise = table[table.score == "feature_norm"].iloc[0]
    assert abs(noise.rho) < 0.15 and 0.4 < noise.auroc_not_unanimous < 0.6
    assert table[table.score == "kappa | feature_norm (partial)"].rho.iloc[0] > 0.9
    # given a proj_norm that already is the certainty, kappa adds almost nothing
    proj = certainty + 0.01 * torch.randn(600, generator=g, dtype=torch.float64)
    both = human_table(human, {"kappa": certainty, "feature_norm": torch.randn(600, generator=g).double(),
                               "proj_norm": proj})
    partial = both.set_index("score").rho
    assert partial["kappa | feature_norm (partial)"] > 0.9 and abs(partial["kappa | proj_norm (partial)"]) < 0.5


def test_partial_spearman_of_a_monotone_function_of_z_is_nan_not_a_crash():
    from analysis.measures.uncertainty import partial_spearman

    g = np.random.default_rng(1)
    z, y = g.normal(size=500), g.normal(size=500)
    assert np.isnan(partial_spearman(3 + 2 * np.exp(z), y, z))  # x = f(z), f increasing: the implicit kappa
    assert np.isnan(partial_spearman(y, -z ** 3, z))
    kappa = (1 + 32 * np.exp(z)).astype(np.float32)  # float32 rounding ties some ranks: still "determined by z"
    assert np.isnan(partial_spearman(kappa, y, z))
