"""SimCLR pretraining, readable top to bottom.

Device-side data path: the shuffle (``randperm``) and the augmentation run on the training device in whole
batches; the uint8 images live on the device, in host memory or memory-mapped on disk (``data.residency``,
probclr.data.residency); no DataLoader worker sits in the hot loop.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from probclr.config import Config, merge
from probclr.data.augment import SimCLRAugment
from probclr.data.cache import cache_dir
from probclr.data.pairs import SoftLabelPairs, pair_generator
from probclr.data.residency import AHEAD, BatchSource, Residency, batches, make_source
from probclr.data.sampler import BatchSampler
from probclr.data.sources import load_splits, resolve_residency
from probclr.data.splits import Splits
from probclr.device import make_generator, resolve_device
from probclr.distributed import DistInfo, dist_info, init_from_env, mean_over_ranks, owned_process_group
from probclr.errors import ConfigError, DataError, ProbclrError
from probclr.io import read_json
from probclr.model.backbones import channel_stats, resolve_stem
from probclr.model.build import build_model
from probclr.model.forward import as_float_rgb, embed
from probclr.model.heads import SimCLRModel
from probclr.model.whitening import first_layer_whitening
from probclr.provenance import provenance
from probclr.run.rundir import RunDir
from probclr.run.runlock import RunLock
from probclr.train.loggers import Loggers, check_loggers
from probclr.train.monitor import KNNMonitor, monitor_interval
from probclr.train.optim import build_optimizer, lr_at, scaled_lr, set_lr
from probclr.train.state import EpochState, TrainingError, TrainState
from probclr.train.step import Phase, StepModel, pair_views, phase_of, train_step, two_views
from probclr.train.syncbn import convert_to_global_bn

__all__ = ["PretrainResult", "Progress", "Stopped", "TrainingError", "pretrain"]


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
    if cfg.data.pairs == "soft_labels":
        raise ConfigError("data.pairs soft_labels with several processes is not supported; train on one process")


def _finite_everywhere(loss: Tensor) -> bool:
    """Whether the loss is finite on every rank (so that all ranks skip the same steps); a host sync."""
    bad = (~torch.isfinite(loss.detach())).float()
    if dist_info().world > 1:
        import torch.distributed as dist

        dist.all_reduce(bad)
    return not bool(bad > 0)




def kappa_stats(kappas: list[Tensor]) -> dict[str, float]:
    """Mean, spread and quantiles of the concentrations seen in an epoch (collapse shows here)."""
    if not kappas:
        return {}
    k = torch.cat(kappas).float().cpu()
    q = torch.quantile(k, torch.tensor([0.1, 0.5, 0.9]))
    return {"kappa_mean": float(k.mean()), "kappa_std": float(k.std()), "kappa_q10": float(q[0]),
            "kappa_q50": float(q[1]), "kappa_q90": float(q[2])}






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
    locked for the whole run (one writer; with several processes, rank 0 holds it). A relative
    ``data.data_dir`` is recorded absolute, so that every later reader of the run finds the same images."""
    cfg = _absolute_data_dir(cfg)
    with owned_process_group():
        if int(os.environ.get("RANK", "0")) != 0:
            return _pretrain(cfg, out, resume, on_progress, command)
        with RunLock(Path(out)):
            return _pretrain(cfg, out, resume, on_progress, command)


def _absolute_data_dir(cfg: Config) -> Config:
    d = cfg.data.data_dir
    if not d:
        return cfg
    full = str(Path(d).expanduser().resolve())
    return cfg if full == d else merge(cfg, {"data.data_dir": full})


class Data(NamedTuple):
    """The pretraining images as the loop sees them, and what the monitor and the projector need."""

    source: BatchSource  # serves uint8 batches on the device
    n: int  # pretraining images
    mean: Tensor  # (C,) channel statistics for the encoder's normalisation
    std: Tensor  # (C,)
    sample: Tensor  # (2, C, H, W) on the device, for the dry forward pass
    splits: Splits  # every split, decoded
    residency: Residency  # device | host | stream | encoded: data.residency resolved
    pairs: SoftLabelPairs | None = None  # data.pairs soft_labels: each anchor's partner is drawn by soft labels
    whitening: Tensor | None = None  # model.convnet_whiten: the frozen first layer's weights, from these images

    def drop_decoded(self) -> Data:
        """With the images streamed from disk, let the decoded pretraining and label-pool images go."""
        if self.residency != "stream":
            return self
        empty = self.splits.pretrain._replace(images=self.splits.pretrain.images[:0],
                                              labels=self.splits.pretrain.labels[:0])
        return self._replace(splits=self.splits._replace(pretrain=empty, train=empty))


def load_data(cfg: Config, device: torch.device) -> tuple[Data, Config]:
    """Decode (or load from the cache) the dataset, put the pretraining images where ``data.residency``
    says; resolves the ResNet stem by image size (the returned config records it)."""
    residency = resolve_residency(cfg.data, device)  # decided once, before anything is decoded
    splits = load_splits(cfg.data, residency)
    images = splits.pretrain.images
    n = images.shape[0]
    if n < cfg.optim.batch_size:
        raise ProbclrError(f"optim.batch_size {cfg.optim.batch_size} exceeds the {n} pretraining images")
    mean, std = channel_stats(images)  # exact sums: the same whatever order the images are stored in
    cfg = dataclasses.replace(cfg, model=resolve_stem(cfg.model, int(images.shape[-1])))
    rows = splits.pretrain_rows
    sample = images[rows[:2] if rows is not None else torch.arange(2)].to(device)  # (2, C, H, W) canonical first two
    pairs = SoftLabelPairs.load(cfg.data.soft_labels or "", n, device) if cfg.data.pairs == "soft_labels" else None
    whitening = first_layer_whitening(cfg.model, images, rows, mean, std)  # (W0, C, 3, 3) or None
    source = make_source(images, residency, device, cache_dir(cfg.data), rows)
    return Data(source, n, mean, std, sample, splits, residency, pairs, whitening), cfg


def place_model(cfg: Config, data: Data, device: torch.device, info: DistInfo) -> tuple[SimCLRModel, nn.Module]:
    """The model on its device, checked to run on these images before anything is written; with several
    processes also its DDP wrapper (and global batch norm with run.sync_bn)."""
    model = build_model(cfg, data.mean, data.std, data.whitening).to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    check_model_runs(model, data.sample, cfg)  # before anything is written: a retry never meets a half-made run
    if info.world == 1:
        return model, model
    from torch.nn.parallel import DistributedDataParallel

    if cfg.run.sync_bn:  # global BN: nn.SyncBatchNorm on CUDA (GPU-only), probclr.syncbn elsewhere
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[assignment]
        else:
            model = convert_to_global_bn(model)  # type: ignore[assignment]
    return model, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class Loop(NamedTuple):
    """Everything an epoch uses that does not change during the run."""

    cfg: Config
    device: torch.device
    info: DistInfo
    data: Data
    step: StepModel
    opt: torch.optim.Optimizer
    aug: SimCLRAugment
    schedule: Schedule
    monitor: KNNMonitor | None
    every: int  # monitor interval in epochs (0 = off)
    loggers: Loggers
    on_progress: Callable[[Progress], None] | None


class Schedule(NamedTuple):
    """Steps and learning rates: the last partial batch of an epoch is dropped; warm-up, then cosine."""

    steps_per_epoch: int
    total: int
    warmup: int
    base_lr: float

    @staticmethod
    def of(cfg: Config, n: int) -> Schedule:
        """The schedule of ``n`` images at the config's batch size and epochs."""
        steps_per_epoch = n // cfg.optim.batch_size
        return Schedule(steps_per_epoch, steps_per_epoch * cfg.optim.epochs,
                        round(cfg.optim.warmup_epochs * steps_per_epoch), scaled_lr(cfg.optim))

    def lr(self, step: int) -> float:
        """The learning rate of global step ``step`` (0-based)."""
        return lr_at(step, self.total, self.warmup, self.base_lr)


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
    device, info = _device_and_world(cfg)
    torch.manual_seed(cfg.run.seed)
    data, cfg = load_data(cfg, device)
    every = monitor_interval(cfg, data.splits)
    monitor = KNNMonitor(data.splits, cfg.run.monitor_bank, cfg.run.monitor_queries) if every and info.is_main else None
    data = data.drop_decoded()  # the monitor keeps its own bank

    # 2. model, optimiser, schedule, generator (the shuffle: the same on every rank)
    model, wrapped = place_model(cfg, data, device, info)
    opt = build_optimizer(model, cfg.optim)
    gen = make_generator(device, cfg.run.seed)
    step = StepModel(model, torch.compile(wrapped) if cfg.run.compile else wrapped, cfg, device)
    schedule = Schedule.of(cfg, data.n)

    # 3. fresh run or resume
    state = TrainState(run, cfg, model, opt, gen, schedule.steps_per_epoch, info.is_main)
    if resume:
        state.restore()
        _check_same_soft_labels(run, data.pairs)
    elif info.is_main:
        run.write_header(cfg, {**provenance(device, command), **_pairs_record(data.pairs)})
    loggers = Loggers(cfg, run.root, enabled=info.is_main)
    if not resume:
        state.checkpoint(0)  # the initial weights: epoch 0 doubles as the random-encoder baseline

    # 4. epochs: shuffle on the device, two views per image, the loss, optimiser step; checkpoint each epoch
    loop = Loop(cfg, device, info, data, step, opt, SimCLRAugment(cfg.augment), schedule, monitor, every, loggers,
                on_progress)
    with StopSignal(enabled=info.world == 1) as stop:
        for epoch in range(state.start_epoch, cfg.optim.epochs):
            run_epoch(loop, state, epoch, stop)
    if loggers.items:
        log_projector(loggers, model, data.splits)
    loggers.close()
    return PretrainResult(run.root, cfg.optim.epochs, state.step, state.last_loss, time.perf_counter() - t_start)


def _pairs_record(pairs: SoftLabelPairs | None) -> dict[str, str]:
    return {"soft_labels_sha256": pairs.sha256} if pairs is not None else {}


def _check_same_soft_labels(run: RunDir, pairs: SoftLabelPairs | None) -> None:
    """A resumed run draws its partners from the soft labels it started with, or refuses in one line."""
    if pairs is None:
        return
    was = read_json(run.provenance_path, "the run's provenance").get("soft_labels_sha256")
    if was != pairs.sha256:
        raise DataError(f"data.soft_labels now has sha256 {pairs.sha256[:12]}… but the run started with"
                        f" {str(was)[:12]}…; resume with the same file, or start a new run (another --out)")


def _device_and_world(cfg: Config) -> tuple[torch.device, DistInfo]:
    device = resolve_device(cfg.run)
    info = init_from_env(device.type)
    check_world(cfg, info)
    if device.type == "cuda" and info.world > 1:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device, info


def _epoch_generator(loop: Loop, epoch: int, gen: torch.Generator) -> torch.Generator:
    """One process: the run's generator. Several: each augments its share of every global batch with a
    generator of its own, and draws its own Monte-Carlo samples (torch's global generator)."""
    info, seed = loop.info, loop.cfg.run.seed
    if info.world == 1:
        return gen
    aug_gen = make_generator(loop.device, (seed * 100_003 + epoch) * 1024 + info.rank)
    torch.manual_seed((seed * 100_003 + epoch) * 1024 + info.rank + 512)
    return aug_gen


def run_epoch(loop: Loop, state: TrainState, epoch: int, stop: StopSignal) -> None:
    """Train one epoch (or the rest of a stopped one), then record, monitor and checkpoint it."""
    cfg, info, spe = loop.cfg, loop.info, loop.schedule.steps_per_epoch
    loop.step.model.train()
    t0 = time.perf_counter()
    sampler = BatchSampler(cfg.optim.batch_size, info.rank, info.world)
    ep = state.begin_epoch(loop.data.n, loop.device, sampler)
    aug_gen = _epoch_generator(loop, epoch, state.gen)
    phase = phase_of(cfg, epoch)
    feed = batches(loop.data.source, lambda s: _step_rows(loop, sampler.indices(ep.perm, s), epoch, s),
                   range(ep.first, spe), ahead=loop.data.residency in AHEAD)  # each step's rows drawn once
    with closing(feed):  # a stop or an error mid-epoch ends the prefetch thread
        _steps(loop, state, ep, epoch, feed, aug_gen, phase, stop, t0)
    _end_epoch(loop, state, ep, epoch, time.perf_counter() - t0)
    if stop.signal is not None and epoch + 1 < cfg.optim.epochs:  # a signal at an epoch's last step
        raise Stopped(stop.signal, state.step, state.last)  # (or in a one-step epoch) stops here, epoch saved


def _step_rows(loop: Loop, anchors: Tensor, epoch: int, step: int) -> Tensor:
    """The rows a step reads: its anchors (B,), or with soft-label pairs anchors then partners (2B,)."""
    pairs = loop.data.pairs
    if pairs is None:
        return anchors
    return torch.cat([anchors, pairs.partners(anchors, pair_generator(loop.device, loop.cfg.run.seed, epoch, step))])


def _views(loop: Loop, x: Tensor, rows: Tensor, aug_gen: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """A step's 2B views and, with soft-label pairs, the log weights of its negatives (2B, 2B)."""
    pairs = loop.data.pairs
    if pairs is None:
        return two_views(loop.aug, x, aug_gen), None
    b = rows.shape[0] // 2
    return pair_views(loop.aug, x, aug_gen), pairs.negative_log_weights(rows[:b], rows[b:])


def _steps(loop: Loop, state: TrainState, ep: EpochState, epoch: int, feed: Iterator[tuple[int, Tensor, Tensor]],
           aug_gen: torch.Generator, phase: Phase, stop: StopSignal, t0: float) -> None:
    """The epoch's steps over ``feed`` (step, its rows, their uint8 batch); checkpoints and raises Stopped on a
    signal."""
    cfg, spe = loop.cfg, loop.schedule.steps_per_epoch
    for i, rows, x in feed:  # x: (B / world, C, H, W) uint8, this rank's share of the global batch (2B with pairs)
        lr = loop.schedule.lr(state.step)
        set_lr(loop.opt, lr)
        views, log_weight = _views(loop, x, rows, aug_gen)
        loss, kappa = train_step(loop.step, views, loop.opt, phase, log_weight)
        if cfg.optim.skip_nonfinite and not _finite_everywhere(loss):  # checked before the update
            state.skip(ep, epoch)
            continue
        if kappa is not None:
            ep.kappas.append(kappa)
        loop.opt.step()
        state.step += 1
        ep.loss_sum += loss.detach()
        _report(loop, state, epoch, i, ep.first, loss, lr, t0)
        if stop.signal is not None and i + 1 < spe:
            state.checkpoint(epoch, ep.partial(i + 1))
            raise Stopped(stop.signal, state.step, state.last)


def _report(loop: Loop, state: TrainState, epoch: int, i: int, first: int, loss: Tensor, lr: float,
            t0: float) -> None:
    """Check the loss is finite (every step on CPU, every run.log_every steps on CUDA: a host sync) and
    report progress to the display and the step loggers."""
    cfg, spe, every = loop.cfg, loop.schedule.steps_per_epoch, loop.cfg.run.log_every
    if loop.device.type != "cpu" and (i + 1) % every:
        return
    value = float(mean_over_ranks(loss.detach()))
    if not math.isfinite(value):
        raise TrainingError(
            f"loss became {value} at step {state.step} (epoch {epoch + 1}); the last good checkpoint"
            f" is {str(state.last)!r}. Start a new run (another --out) with a lower optim.lr or a higher"
            " loss.temperature, or let optim.skip_nonfinite skip such steps"
        )
    rate = (i + 1 - first) * cfg.optim.batch_size / (time.perf_counter() - t0)
    if loop.on_progress and loop.info.is_main and ((i + 1) % every == 0 or i + 1 == spe):
        loop.on_progress(Progress(epoch + 1, state.step, loop.schedule.total, value, rate, lr, i + 1 == spe))
    if (i + 1) % every == 0 and loop.loggers.items:
        loop.loggers.step({"loss": value, "lr": lr, "images_per_s": rate}, state.step)


def _end_epoch(loop: Loop, state: TrainState, ep: EpochState, epoch: int, wall: float) -> None:
    """The epoch's row in the history (mean loss, lr, throughput, kappas, kNN monitor), loggers, checkpoint."""
    cfg, spe = loop.cfg, loop.schedule.steps_per_epoch
    last_loss = float(mean_over_ranks(ep.loss_sum)) / max(1, spe - ep.skipped)
    due = loop.monitor is not None and ((epoch + 1) % loop.every == 0 or epoch + 1 == cfg.optim.epochs)
    watched = loop.monitor(loop.step.model.encoder) if due and loop.monitor is not None else {}
    state.history.append({
        "epoch": epoch + 1, "step": state.step, "loss": last_loss, "lr": loop.schedule.lr(state.step - 1),
        "images_per_s": (spe - ep.first) * cfg.optim.batch_size / wall, "epoch_s": wall, **kappa_stats(ep.kappas),
        **({"skipped_steps": ep.skipped} if cfg.optim.skip_nonfinite else {}), **watched,
    })
    loop.loggers.epoch(state.history[-1], torch.cat(ep.kappas) if ep.kappas else None)
    state.checkpoint(epoch + 1)
