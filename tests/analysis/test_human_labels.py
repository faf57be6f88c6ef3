import numpy as np
import pytest
import torch

from analysis.measures.human_labels import align, human_entropy, load_cifar10h
from probclr.errors import ProbclrError


def _fake_human(labels: torch.Tensor, flip: int = 30) -> torch.Tensor:
    h = torch.nn.functional.one_hot(labels, 10).double() * 0.9 + 0.01
    h[:flip] = h[:flip].roll(1, dims=1)  # a few dozen images where humans disagree with the label
    return h / h.sum(1, keepdim=True)


def test_identity_alignment_only_when_verified():
    labels = torch.randint(0, 10, (10000,), generator=torch.Generator().manual_seed(0))
    human = _fake_human(labels)
    torch.testing.assert_close(align(human, labels, original_order=True, order_file=None), human)
    with pytest.raises(ProbclrError, match="image folders"):
        align(human, labels, original_order=False, order_file=None)
    shuffled = labels[torch.randperm(10000, generator=torch.Generator().manual_seed(1))]
    with pytest.raises(ProbclrError, match="fails verification"):
        align(human, shuffled, original_order=True, order_file=None)


def test_alignment_file_permutation(tmp_path):
    labels = torch.randint(0, 10, (10000,), generator=torch.Generator().manual_seed(0))
    human = _fake_human(labels)
    perm = torch.randperm(10000, generator=torch.Generator().manual_seed(2))
    test_labels = labels[perm]  # the test set is stored in another order; row of test image i is perm[i]
    np.save(tmp_path / "order.npy", perm.numpy())
    torch.testing.assert_close(align(human, test_labels, False, tmp_path / "order.npy"), human[perm])
    np.save(tmp_path / "bad.npy", np.zeros(10000, dtype=np.int64))
    with pytest.raises(ProbclrError, match="permutation"):
        align(human, test_labels, False, tmp_path / "bad.npy")


def test_load_cifar10h_shape_and_values(tmp_path):
    np.save(tmp_path / "ok.npy", np.full((10000, 10), 0.1))
    assert load_cifar10h(tmp_path / "ok.npy").shape == (10000, 10)
    np.save(tmp_path / "neg.npy", np.full((10000, 10), -0.1))
    with pytest.raises(ProbclrError, match="probability vectors"):
        load_cifar10h(tmp_path / "neg.npy")
    with pytest.raises(ProbclrError, match="does not exist"):
        load_cifar10h(tmp_path / "missing.npy")
    assert human_entropy(torch.eye(10, dtype=torch.float64)).abs().max() < 1e-9


def test_real_cifar10h_file_is_refused_for_the_jpeg_folders(cifar_dir):
    human = load_cifar10h(cifar_dir.parent / "cifar10h" / "cifar10h-probs.npy")
    assert torch.allclose(human.sum(1), torch.ones(10000, dtype=torch.float64))
    folder_labels = torch.arange(10).repeat_interleave(1000)  # ImageFolder order: class by class
    with pytest.raises(ProbclrError, match="image folders"):
        align(human, folder_labels, original_order=False, order_file=None)
    with pytest.raises(ProbclrError, match="fails verification"):  # even if someone claims original order
        align(human, folder_labels, original_order=True, order_file=None)
