"""What a pretraining run carries from step to step and across stops: the history of finished epochs, the
global step, the non-finite-step budget, the running sums of the epoch in progress, and the checkpoints
that let a stopped run continue exactly where it was (mid-epoch included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from probclr.config import Config, to_dict
from probclr.data.sampler import BatchSampler
from probclr.distributed import barrier
from probclr.errors import ProbclrError
from probclr.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from probclr.run.rundir import RunDir, config_from_checkpoint, resume_diff


class TrainingError(ProbclrError):
    """Training cannot go on (a non-finite loss, for one); the last good checkpoint remains."""


@dataclass
class EpochState:
    """The epoch in progress: its shuffle, the step it (re)started at, its running loss, kappas and skips."""

    perm: Tensor  # (N,) this epoch's order of the pretraining images
    first: int  # the step within the epoch this process started at (> 0 after a mid-epoch stop)
    loss_sum: Tensor  # () on the device: the sum of the losses of the steps taken
    kappas: list[Tensor] = field(default_factory=list)  # (2B,) per step, --new-loss only
    skipped: int = 0  # non-finite steps skipped in this epoch

    def partial(self, step_in_epoch: int) -> dict[str, Any]:
        """What a checkpoint keeps to continue this epoch exactly after a stop at ``step_in_epoch``."""
        return {"step_in_epoch": step_in_epoch, "perm": self.perm.cpu(), "loss_sum": float(self.loss_sum),
                "skipped": self.skipped, "kappas": torch.cat(self.kappas).cpu() if self.kappas else None}


def _value(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return to_dict(cfg)[section][key]


class TrainState:
    """Owns resume, the partial epoch, checkpointing and the counters of one pretraining run (rank 0
    writes; with several processes the others wait at a barrier)."""

    def __init__(self, run: RunDir, cfg: Config, model: nn.Module, opt: torch.optim.Optimizer,
                 gen: torch.Generator, steps_per_epoch: int, is_main: bool) -> None:
        self.run, self.cfg, self.model, self.opt, self.gen = run, cfg, model, opt, gen
        self.steps_per_epoch, self.is_main = steps_per_epoch, is_main
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.step = 0  # global optimiser step (skipped steps count)
        self.skipped = 0  # non-finite steps skipped over the whole run
        self._partial: dict[str, Any] | None = None  # where a run stopped by SIGINT/SIGTERM left its epoch

    @property
    def last_loss(self) -> float | None:
        """The mean loss of the last finished epoch, if any."""
        return self.history[-1]["loss"] if self.history else None

    def restore(self) -> None:
        """Continue the run in ``run``: weights, optimiser, generators, history; refused if the config differs."""
        state = load_checkpoint(self.run.last)
        saved = config_from_checkpoint(state)
        diff = resume_diff(saved, self.cfg)
        if diff:
            shown = ", ".join(f"{k} (run: {_value(saved, k)!r}, now: {_value(self.cfg, k)!r})" for k in diff[:3])
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            raise CheckpointError(
                f"cannot resume {str(self.run.root)!r}: its config differs in {shown}{more}; resume with only --out"
                " RUN --resume (the run's own config.yaml is used), or start a new run in another --out"
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        self.start_epoch, self.history = int(state["epoch"]), list(state["metrics"])
        self._partial = state.get("partial")
        self.step = self.start_epoch * self.steps_per_epoch
        self.skipped = sum(int(h.get("skipped_steps", 0)) for h in self.history)

    def checkpoint(self, epoch: int, within: dict[str, Any] | None = None) -> None:
        """Write RUN/checkpoints/last.pt (and the epoch's own with run.keep_checkpoints) and the metrics."""
        if not self.is_main:  # rank 0 writes; the others wait for it
            barrier()
            return
        state = {
            "kind": "simclr", "epoch": epoch, "step": epoch * self.steps_per_epoch, "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "generator": self.gen.get_state(), "config": to_dict(self.cfg),
            "metrics": self.history, "torch_rng": torch.get_rng_state(),  # the loss's Monte-Carlo draws use it
        }
        if within is not None:  # stopped mid-epoch: what it takes to continue this epoch exactly
            state["partial"] = within
            state["step"] = epoch * self.steps_per_epoch + int(within["step_in_epoch"])
        save_checkpoint(self.run.last, state)
        if self.cfg.run.keep_checkpoints:
            save_checkpoint(self.run.epoch_checkpoint(epoch), state)
        self.run.write_metrics(self.history)
        barrier()

    def begin_epoch(self, n: int, device: torch.device, sampler: BatchSampler) -> EpochState:
        """A fresh shuffle of the ``n`` images, or the stopped epoch's shuffle, step and running sums."""
        loss_sum = torch.zeros((), device=device)
        if self._partial is None:
            return EpochState(sampler.shuffle(n, self.gen, device), 0, loss_sum)  # perm: (N,)
        p, self._partial = self._partial, None
        loss_sum += float(p["loss_sum"])
        kappas = [p["kappas"].to(device)] if p.get("kappas") is not None else []
        ep = EpochState(p["perm"].to(device), int(p["step_in_epoch"]), loss_sum, kappas, int(p.get("skipped", 0)))
        self.step += ep.first
        self.skipped += ep.skipped
        return ep

    def skip(self, ep: EpochState, epoch: int) -> None:
        """Count a non-finite step; past ``optim.skip_nonfinite`` of them the run stops with a TrainingError."""
        self.skipped += 1
        ep.skipped += 1
        if self.skipped > self.cfg.optim.skip_nonfinite:
            raise TrainingError(
                f"loss was non-finite at {self.skipped} steps, the last at step {self.step + 1} (epoch {epoch + 1}),"
                f" more than optim.skip_nonfinite = {self.cfg.optim.skip_nonfinite}; the last good checkpoint"
                f" is {str(self.run.last)!r}"
            )
        self.opt.zero_grad(set_to_none=True)
        self.step += 1

    @property
    def last(self) -> Path:
        """The checkpoint a stopped or failed run continues from."""
        return self.run.last
