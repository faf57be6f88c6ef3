"""A tqdm progress bar fed by the library's progress callbacks (the library itself never prints)."""

from __future__ import annotations

from types import TracebackType

from tqdm import tqdm

from probclr.train import Progress


class ProgressBar:
    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: tqdm | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, p: Progress) -> None:
        if self.bar is None:
            self.bar = tqdm(total=p.total_steps, initial=p.step - 1, desc=self.desc, unit="step", dynamic_ncols=True)
        self.bar.update(p.step - self.bar.n)
        self.bar.set_postfix(epoch=p.epoch, loss=f"{p.loss:.3f}", img_s=f"{p.images_per_s:.0f}", lr=f"{p.lr:.3g}")

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.close()
