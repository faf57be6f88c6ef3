import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from probclr.data.fractions import holdout_split, label_subset
from probclr.errors import ProbclrError

LABELS = torch.arange(10).repeat_interleave(torch.tensor([500, 400, 300, 200, 100, 50, 20, 10, 5, 1]))


def test_stratified_counts():
    idx = label_subset(LABELS, 0.1, 0)
    counts = torch.bincount(LABELS[idx], minlength=10)
    assert counts.tolist() == [50, 40, 30, 20, 10, 5, 2, 1, 1, 1]  # ceil, and at least one per class
    assert torch.unique(idx).numel() == idx.numel()


def test_exact_counts_on_cifar_sizes():
    labels = torch.arange(10).repeat_interleave(5000)
    for f, per_class in ((0.01, 50), (0.1, 500), (1.0, 5000)):
        assert torch.bincount(labels[label_subset(labels, f, 3)]).tolist() == [per_class] * 10


def test_nested_and_seeded():
    small, big = label_subset(LABELS, 0.01, 4), label_subset(LABELS, 0.3, 4)
    assert set(small.tolist()) <= set(big.tolist())
    assert torch.equal(label_subset(LABELS, 0.3, 4), big)
    assert not torch.equal(label_subset(LABELS, 0.3, 5), big)


@settings(max_examples=50, deadline=None)
@given(f1=st.floats(0.001, 1.0), f2=st.floats(0.001, 1.0), seed=st.integers(0, 1000))
def test_property_nested_every_class_present(f1, f2, seed):
    lo, hi = sorted((f1, f2))
    a, b = label_subset(LABELS, lo, seed), label_subset(LABELS, hi, seed)
    assert set(a.tolist()) <= set(b.tolist())
    assert torch.unique(LABELS[a]).numel() == 10


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01, float("nan"), 2])
def test_bad_fraction(bad):
    with pytest.raises(ProbclrError, match="fraction must be in"):
        label_subset(LABELS, bad, 0)


def test_holdout_split_is_a_partition_and_keeps_singletons():
    y = LABELS[label_subset(LABELS, 0.1, 0)]
    fit, hold = holdout_split(y, 0.2, 0)
    assert sorted(torch.cat([fit, hold]).tolist()) == list(range(y.numel()))
    assert torch.unique(y[fit]).numel() == 10  # every class keeps training labels
    assert (torch.bincount(y[hold], minlength=10)[7:] == 0).all()  # single-label classes are never held out
