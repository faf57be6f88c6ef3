"""Run-directory test helpers shared by the test modules."""

from pathlib import Path

import torch

from probclr.run.checkpoint import load_checkpoint


def assert_same_weights(a_run: Path, b_run: Path) -> tuple[dict, dict]:
    """The last checkpoints of two run directories hold bit-identical model weights; returns both."""
    a = load_checkpoint(a_run / "checkpoints" / "last.pt")
    b = load_checkpoint(b_run / "checkpoints" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    return a, b
