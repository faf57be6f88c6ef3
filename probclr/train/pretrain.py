"""SimCLR pretraining, readable top to bottom.

Device-side data path: the shuffle (``randperm``) and the augmentation run on the training device in whole
batches; the uint8 images live on the device, in host memory or memory-mapped on disk (``data.residency``,
probclr.residency); no DataLoader worker sits in the hot loop.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from probclr.config import Config, to_dict
from probclr.data.augment import SimCLRAugment
from probclr.data.cache import cache_dir
from probclr.data.residency import make_source
from probclr.data.sources import load_splits
from probclr.data.splits import Splits
from probclr.device import autocast, make_generator, resolve_device
from probclr.distributed import DistInfo, barrier, dist_info, init_from_env, mean_over_ranks, owned_process_group
from probclr.errors import ConfigError, ProbclrError
from probclr.model.backbones import channel_stats, resolve_stem
from probclr.model.build import build_model
from probclr.model.forward import as_float_rgb, embed
from probclr.model.heads import Embedding, SimCLRModel
from probclr.model.losses import mc_infonce_global, nt_xent_global
from probclr.provenance import provenance
from probclr.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from probclr.run.rundir import RunDir, config_from_checkpoint, resume_diff
from probclr.run.runlock import RunLock
from probclr.train.gradcache import grad_cached_backward
from probclr.train.loggers import Loggers, check_loggers
from probclr.train.monitor import KNNMonitor, monitor_interval
from probclr.train.optim import build_optimizer, lr_at, scaled_lr, set_lr
from probclr.train.syncbn import convert_to_global_bn


class Stopped(Exception):  # noqa: N818 - a clean stop, not an error
    """SIGINT or SIGTERM stopped the run after a step; a checkpoint to resume from was written first."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; saved {str(checkpoint)!r},"
                         " continue with --resume")
        self.signum = signum


class StopSignal:
    """While active, SIGINT/SIGTERM only set ``signal``; the loop then checkpoints and stops (main thread only)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def __enter__(self) -> StopSignal:
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class TrainingError(ProbclrError):
    """Training cannot go on (a non-finite loss, for one); the last good checkpoint remains."""


class Progress(NamedTuple):
    """Where pretraining is: epoch, step, loss, throughput and lr (for progress displays)."""
    epoch: int
    step: int  # global optimiser step, 1-based
    total_steps: int
    loss: float
    images_per_s: float
    lr: float
    epoch_end: bool = False  # the last step of an epoch


@dataclass(frozen=True)
class PretrainResult:
    """What a finished pretraining produced: its run directory, epochs, steps, final loss and time."""
    run_dir: Path
    epochs: int
    steps: int
    final_loss: float | None
    wall_s: float




def check_world(cfg: Config, info: DistInfo) -> None:
    """What several processes (torchrun) can and cannot do yet; one clear error otherwise."""
    if info.world == 1:
        return
    if cfg.optim.batch_size % info.world:
        raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} is not divisible by the world size {info.world};"
                          f" use a multiple of {info.world}")
    if cfg.optim.grad_cache_chunk:
        raise ConfigError("optim.grad_cache_chunk with several processes is not supported; use one or the other")


def _finite_everywhere(loss: Tensor) -> bool:
    """Whether the loss is finite on every rank (so that all ranks skip the same steps); a host sync."""
    bad = (~torch.isfinite(loss.detach())).float()
    if dist_info().world > 1:
        import torch.distributed as dist

        dist.all_reduce(bad)
    return not bool(bad > 0)


def contrastive_loss(out: Tensor | Embedding, cfg: Config) -> tuple[Tensor, Tensor | None]:
    """The configured loss on the head output of 2B stacked views; also the kappas, if any (2B,).
    With several processes both losses contrast against the global batch (``*_global``)."""
    if isinstance(out, Embedding):
        mu_a, mu_b = out.mu.chunk(2)
        k_a, k_b = out.kappa.chunk(2)
        loss = mc_infonce_global(mu_a, k_a, mu_b, k_b, cfg.loss.temperature, cfg.loss.samples, cfg.loss.kl_weight)
        return loss, out.kappa.detach()
    z_a, z_b = out.float().chunk(2)  # (B, P) each
    return nt_xent_global(z_a, z_b, cfg.loss.temperature), None


def kappa_stats(kappas: list[Tensor]) -> dict[str, float]:
    """Mean, spread and quantiles of the concentrations seen in an epoch (collapse shows here)."""
    if not kappas:
        return {}
    k = torch.cat(kappas).float().cpu()
    q = torch.quantile(k, torch.tensor([0.1, 0.5, 0.9]))
    return {"kappa_mean": float(k.mean()), "kappa_std": float(k.std()), "kappa_q10": float(q[0]),
            "kappa_q50": float(q[1]), "kappa_q90": float(q[2])}


def _value(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return to_dict(cfg)[section][key]


def _restore(run: RunDir, cfg: Config, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator) -> dict:
    state = load_checkpoint(run.last)
    saved = config_from_checkpoint(state)
    diff = resume_diff(saved, cfg)
    if diff:
        shown = ", ".join(f"{k} (run: {_value(saved, k)!r}, now: {_value(cfg, k)!r})" for k in diff[:3])
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise CheckpointError(
            f"cannot resume {str(run.root)!r}: its config differs in {shown}{more}; resume with only --out RUN"
            " --resume (the run's own config.yaml is used), or start a new run in another --out"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    return state


def check_model_runs(model: SimCLRModel, sample: Tensor, cfg: Config) -> None:
    """One forward pass in eval mode without gradients (no state changes, no random draws); a model that
    cannot run on these images is a one-line configuration error naming the sizes."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(as_float_rgb(sample))
    except RuntimeError as err:
        h, w = sample.shape[-2:]
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ConfigError(f"model.backbone {cfg.model.backbone} (model.convnet_widths {list(cfg.model.convnet_widths)})"
                          f" cannot run on {h}x{w} images: {reason}; use fewer stages or larger images") from err
    finally:
        model.train(was)


def log_projector(loggers: Loggers, model: SimCLRModel, splits: Splits, count: int = 500) -> None:
    """The embedding projector: h of (the first ``count`` of) the test images, labels, 32 px thumbnails."""
    test = splits.test
    if test.images.shape[0] == 0:
        return
    images = test.images[:count]
    with torch.no_grad():
        model.eval()
        h = embed(model.encoder, images)  # (n, D)
    names = [test.classes[int(c)] if 0 <= int(c) < len(test.classes) else "?" for c in test.labels[:count]]
    thumbs = torch.nn.functional.interpolate(as_float_rgb(images), size=32, mode="bilinear", antialias=True)
    loggers.projector(h, names, thumbs.clamp(0, 1))


def pretrain(
    cfg: Config,
    out: str | Path,
    resume: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    command: list[str] | None = None,
) -> PretrainResult:
    """Train SimCLR with ``cfg`` into the run directory ``out``; checkpoint every epoch. The run directory is
    locked for the whole run (one writer; with several processes, rank 0 holds it)."""
    with owned_process_group():
        if int(os.environ.get("RANK", "0")) != 0:
            return _pretrain(cfg, out, resume, on_progress, command)
        with RunLock(Path(out)):
            return _pretrain(cfg, out, resume, on_progress, command)


def _pretrain(
    cfg: Config, out: str | Path, resume: bool, on_progress: Callable[[Progress], None] | None,
    command: list[str] | None,
) -> PretrainResult:
    run = RunDir(out)
    if run.last.exists() and not resume:
        raise ProbclrError(f"{str(run.root)!r} already holds a run; pass --resume to continue it or another --out")
    if resume and not run.last.exists():
        raise ProbclrError(f"nothing to resume in {str(run.root)!r}: it holds no checkpoint")
    t_start = time.perf_counter()
    check_loggers(cfg)

    # 1. device (one per process under torchrun), seed, data on the device
    device = resolve_device(cfg.run)
    info = init_from_env(device.type)
    check_world(cfg, info)
    if device.type == "cuda" and info.world > 1:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.run.seed)
    splits = load_splits(cfg.data)
    images = splits.pretrain.images
    n = images.shape[0]
    if n < cfg.optim.batch_size:
        raise ProbclrError(f"optim.batch_size {cfg.optim.batch_size} exceeds the {n} pretraining images")
    mean, std = channel_stats(images)
    cfg = dataclasses.replace(cfg, model=resolve_stem(cfg.model, int(images.shape[-1])))
    sample = images[:2].to(device)
    source, residency = make_source(images, cfg.data.residency, device, cache_dir(cfg.data))
    del images
    every = monitor_interval(cfg, splits)
    monitor = KNNMonitor(splits, cfg.run.monitor_bank, cfg.run.monitor_queries) if every and info.is_main else None
    if residency == "stream":  # the memory map serves the batches: let the decoded set go
        empty = splits.pretrain._replace(images=splits.pretrain.images[:0], labels=splits.pretrain.labels[:0])
        splits = splits._replace(pretrain=empty, train=empty)

    # 2. model, optimiser, schedule, generator
    model = build_model(cfg, mean, std).to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    check_model_runs(model, sample, cfg)  # before anything is written: a retry never meets a half-made run
    train_model: nn.Module = model
    if info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        if cfg.run.sync_bn:  # global BN: nn.SyncBatchNorm on CUDA (GPU-only), probclr.syncbn elsewhere
            if device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[assignment]
            else:
                model = convert_to_global_bn(model)  # type: ignore[assignment]
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = build_optimizer(model, cfg.optim)
    gen = make_generator(device, cfg.run.seed)  # the shuffle: the same on every rank
    aug = SimCLRAugment(cfg.augment)
    b = cfg.optim.batch_size
    steps_per_epoch = n // b  # drop the last partial batch
    total = steps_per_epoch * cfg.optim.epochs
    warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)
    base_lr = scaled_lr(cfg.optim)
    step_fn = torch.compile(train_model) if cfg.run.compile else train_model
    per_rank = b // info.world

    def head_out(fn: Callable[[Tensor], tuple[Tensor, Tensor | Embedding]], v: Tensor) -> Tensor | Embedding:
        with autocast(device, cfg.run.amp):
            return fn(v)[1]

    # 3. fresh run or resume
    history: list[dict[str, Any]] = []
    start_epoch = 0
    partial: dict[str, Any] | None = None  # where a run stopped by SIGINT/SIGTERM left its epoch
    if resume:
        state = _restore(run, cfg, model, opt, gen)
        start_epoch, history = int(state["epoch"]), list(state["metrics"])
        partial = state.get("partial")
    elif info.is_main:
        run.write_header(cfg, provenance(device, command))
    loggers = Loggers(cfg, run.root, enabled=info.is_main)

    def checkpoint(epoch: int, within: dict[str, Any] | None = None) -> None:
        if not info.is_main:  # rank 0 writes; the others wait for it
            barrier()
            return
        state = {
            "kind": "simclr", "epoch": epoch, "step": epoch * steps_per_epoch, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "generator": gen.get_state(), "config": to_dict(cfg),
            "metrics": history, "torch_rng": torch.get_rng_state(),  # the loss's Monte-Carlo draws use it
        }
        if within is not None:  # stopped mid-epoch: what it takes to continue this epoch exactly
            state["partial"] = within
            state["step"] = epoch * steps_per_epoch + int(within["step_in_epoch"])
        save_checkpoint(run.last, state)
        if cfg.run.keep_checkpoints:
            save_checkpoint(run.epoch_checkpoint(epoch), state)
        run.write_metrics(history)
        barrier()

    if start_epoch == 0 and not resume:
        checkpoint(0)  # the initial weights: epoch 0 doubles as the random-encoder baseline

    # 4. epochs: shuffle on the device, two views per image, NT-Xent, optimiser step
    step = start_epoch * steps_per_epoch
    last_loss: float | None = history[-1]["loss"] if history else None
    skipped = sum(int(h.get("skipped_steps", 0)) for h in history)  # non-finite steps skipped so far
    with StopSignal(enabled=info.world == 1) as stop:
        for epoch in range(start_epoch, cfg.optim.epochs):
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            kappas: list[Tensor] = []
            first = 0
            epoch_skipped = 0
            if partial is None:
                perm = torch.randperm(n, generator=gen, device=device)  # (N,)
            else:  # continue the epoch a stopped run left: its shuffle, its step, its running sums
                perm, first = partial["perm"].to(device), int(partial["step_in_epoch"])
                loss_sum += float(partial["loss_sum"])
                kappas = [partial["kappas"].to(device)] if partial.get("kappas") is not None else []
                step += first
                epoch_skipped = int(partial.get("skipped", 0))
                skipped += epoch_skipped
                partial = None
            # several processes: each augments its share of every global batch with a generator of its own
            aug_gen = gen if info.world == 1 else make_generator(device, (cfg.run.seed * 100_003 + epoch) * 1024 + info.rank)
            if info.world > 1:  # ... and its own Monte-Carlo draws for --new-loss (torch's global generator)
                torch.manual_seed((cfg.run.seed * 100_003 + epoch) * 1024 + info.rank + 512)
            for i in range(first, steps_per_epoch):
                lr = lr_at(step, total, warmup, base_lr)
                set_lr(opt, lr)
                idx = perm[i * b : (i + 1) * b][info.rank * per_rank : (info.rank + 1) * per_rank]
                x = source.batch(idx)  # (B / world, C, H, W) uint8: this process's share of the global batch
                views = torch.cat([aug(x, aug_gen), aug(x, aug_gen)])  # (2B / world, 3, S, S)
                if cfg.run.channels_last:
                    views = views.contiguous(memory_format=torch.channels_last)
                opt.zero_grad(set_to_none=True)
                if cfg.optim.grad_cache_chunk:  # the full batch's exact gradient, chunk by chunk (gradcache.py)
                    loss, kappa = grad_cached_backward(model, lambda v: head_out(step_fn, v), views,
                                                       lambda o: contrastive_loss(o, cfg), cfg.optim.grad_cache_chunk)
                else:
                    out = head_out(step_fn, views)  # (2B, P) projections, or (mu, kappa) of the probabilistic head
                    loss, kappa = contrastive_loss(out, cfg)
                    loss.backward()
                if cfg.optim.skip_nonfinite and not _finite_everywhere(loss):  # checked before the update
                    skipped += 1
                    epoch_skipped += 1
                    if skipped > cfg.optim.skip_nonfinite:
                        raise TrainingError(
                            f"loss was non-finite at {skipped} steps, the last at step {step + 1} (epoch {epoch + 1}),"
                            f" more than optim.skip_nonfinite = {cfg.optim.skip_nonfinite}; the last good checkpoint"
                            f" is {str(run.last)!r}"
                        )
                    opt.zero_grad(set_to_none=True)
                    step += 1
                    continue
                if kappa is not None:
                    kappas.append(kappa)
                opt.step()
                step += 1
                loss_sum += loss.detach()
                if device.type == "cpu" or (i + 1) % cfg.run.log_every == 0:
                    value = float(mean_over_ranks(loss.detach()))  # a sync on CUDA only every log_every steps
                    if not math.isfinite(value):
                        raise TrainingError(
                            f"loss became {value} at step {step} (epoch {epoch + 1}); the last good checkpoint"
                            f" is {str(run.last)!r}. Start a new run (another --out) with a lower optim.lr or a higher"
                            " loss.temperature, or let optim.skip_nonfinite skip such steps"
                        )
                    if on_progress and info.is_main and ((i + 1) % cfg.run.log_every == 0 or i + 1 == steps_per_epoch):
                        rate = (i + 1 - first) * b / (time.perf_counter() - t0)
                        on_progress(Progress(epoch + 1, step, total, value, rate, lr, i + 1 == steps_per_epoch))
                    if (i + 1) % cfg.run.log_every == 0 and loggers.items:
                        rate = (i + 1 - first) * b / (time.perf_counter() - t0)
                        loggers.step({"loss": value, "lr": lr, "images_per_s": rate}, step)
                if stop.signal is not None and i + 1 < steps_per_epoch:
                    checkpoint(epoch, {"step_in_epoch": i + 1, "perm": perm.cpu(), "loss_sum": float(loss_sum),
                                       "skipped": epoch_skipped,
                                       "kappas": torch.cat(kappas).cpu() if kappas else None})
                    raise Stopped(stop.signal, step, run.last)
            wall = time.perf_counter() - t0
            last_loss = float(mean_over_ranks(loss_sum)) / max(1, steps_per_epoch - epoch_skipped)
            due = monitor is not None and ((epoch + 1) % every == 0 or epoch + 1 == cfg.optim.epochs)
            watched = monitor(model.encoder) if due and monitor is not None else {}
            history.append({
                "epoch": epoch + 1, "step": step, "loss": last_loss, "lr": lr_at(step - 1, total, warmup, base_lr),
                "images_per_s": (steps_per_epoch - first) * b / wall, "epoch_s": wall, **kappa_stats(kappas),
                **({"skipped_steps": epoch_skipped} if cfg.optim.skip_nonfinite else {}), **watched,
            })
            loggers.epoch(history[-1], torch.cat(kappas) if kappas else None)
            checkpoint(epoch + 1)
            if stop.signal is not None and epoch + 1 < cfg.optim.epochs:  # a signal at an epoch's last step
                raise Stopped(stop.signal, step, run.last)  # (or in a one-step epoch) stops here, epoch saved
    if loggers.items:
        log_projector(loggers, model, splits)
    loggers.close()

    return PretrainResult(run.root, cfg.optim.epochs, step, last_loss, time.perf_counter() - t_start)
