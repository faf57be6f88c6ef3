"""Progress of pretraining, fed by the library's callbacks (the library itself never prints).

On a terminal: a tqdm bar, closed as soon as training ends (later stages never re-print it). In a
non-interactive stream (a log file, CI): one plain line per epoch instead of carriage-return frames.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

from probclr.train.pretrain import Progress


class ProgressBar:
    def __init__(self, desc: str, stream: TextIO | None = None) -> None:
        self.desc = desc
        self.stream = stream or sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar: tqdm | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, p: Progress) -> None:
        if not self.interactive:
            if p.epoch_end:
                print(f"{self.desc}: epoch {p.epoch} step {p.step}/{p.total_steps} loss {p.loss:.4f} "
                      f"images/s {p.images_per_s:.0f} lr {p.lr:.3g}", file=self.stream, flush=True)
            return
        if self.bar is None:
            self.bar = tqdm(total=p.total_steps, initial=p.step - 1, desc=self.desc, unit="step", dynamic_ncols=True,
                            file=self.stream)
        self.bar.update(p.step - self.bar.n)
        self.bar.set_postfix(epoch=p.epoch, loss=f"{p.loss:.3f}", img_s=f"{p.images_per_s:.0f}", lr=f"{p.lr:.3g}")
        if p.step >= p.total_steps:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
