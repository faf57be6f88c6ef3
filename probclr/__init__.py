"""probclr: SimCLR representation learning on images, with a probabilistic head and honest evaluation.

The Python API (``probclr.pretrain``, ``probclr.evaluate``, ``probclr.load_encoder``, ``probclr.embed``,
``probclr.Run``) lives in :mod:`probclr.api` and is imported on first use, so ``import probclr`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "embed", "evaluate", "load_encoder", "pretrain"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from probclr import api

        return getattr(api, name)
    raise AttributeError(f"module 'probclr' has no attribute {name!r}")
