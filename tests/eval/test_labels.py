"""Which labels an evaluation can honour: every class present at every fraction, and at least two classes."""

import pytest
import torch

from probclr.errors import ProbclrError
from probclr.eval.labels import check_fractions_possible


def test_one_class_is_refused_not_reported_as_100_percent():
    with pytest.raises(ProbclrError, match="1 class; classification needs at least 2"):
        check_fractions_possible(torch.zeros(20, dtype=torch.long), (0.5,))
    check_fractions_possible(torch.tensor([0, 1] * 10), (0.5,))  # two classes: fine
    with pytest.raises(ProbclrError, match="class 1 has no labeled"):
        check_fractions_possible(torch.tensor([0, 2] * 10), (0.5,))
