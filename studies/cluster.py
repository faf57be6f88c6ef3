"""Beyond one machine through submitit (as DINO, MAE, MoCo v3 and VISSL do): sweeps as SLURM array jobs and
multi-node pretraining, each resumable from probclr's own checkpoints when SLURM pre-empts or times it out.

Launchers (``--launcher``): ``local`` (this machine, no submitit: today's behaviour), ``submitit-local``
(submitit's local executor: real subprocesses, real pickled jobs, the same submission a cluster gets) and
``slurm``. A submitted task is a :class:`submitit.helpers.Checkpointable`: on pre-emption or timeout submitit
requeues the same call, and the call resumes what the run directory already holds (a sweep point's
pretraining from its last checkpoint, its finished evaluations from their files).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from probclr.config import Config
from probclr.errors import ConfigError, ProbclrError
from probclr.io import atomic_write_json
from probclr.run.rundir import RunDir
from probclr.train.pretrain import pretrain

LAUNCHERS = ("local", "submitit-local", "slurm")
_FIELDS = {"kind", "partition", "time_min", "gpus", "cpus", "parallel", "nodes", "tasks"}


@dataclasses.dataclass(frozen=True)
class Launcher:
    """Where and with what each job runs; a sweep spec's ``launcher:`` block or the command's flags."""
    kind: str = "local"  # local | submitit-local | slurm
    partition: str | None = None  # SLURM partition
    time_min: int = 60  # wall-clock limit per job (SLURM --time); a timed-out job is requeued and resumes
    gpus: int = 0  # GPUs per sweep point, or per node for pretraining
    cpus: int | None = None  # CPUs per task
    parallel: int | None = None  # array parallelism: points running at once (SLURM %N)
    nodes: int = 1  # pretraining: nodes
    tasks: int = 1  # pretraining: processes per node (one per GPU; on CPU as --nproc)

    def check(self) -> Launcher:
        """Refuse bad values and a launcher this machine cannot use, in one line each."""
        if self.kind not in LAUNCHERS:
            raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {self.kind!r}")
        for name in ("time_min", "nodes", "tasks"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"launcher {name} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus", "cpus", "parallel"):
            v = getattr(self, name)
            if v is not None and int(v) < (0 if name == "gpus" else 1):
                raise ConfigError(f"launcher {name} must be >= {0 if name == 'gpus' else 1}, got {v}")
        if self.kind != "local" and importlib.util.find_spec("submitit") is None:
            raise ProbclrError(f"--launcher {self.kind} needs the submitit package, not installed here: "
                               "pip install 'probclr[cluster]'")
        if self.kind == "slurm" and shutil.which("sbatch") is None:
            raise ProbclrError("--launcher slurm needs SLURM's sbatch on PATH and it is not found here: run on the "
                               "cluster's login node, or try the same submission here with --launcher submitit-local")
        return self


def launcher_from(block: dict[str, Any] | None, **flags: Any) -> Launcher:
    """A sweep spec's ``launcher:`` block with the command's flags (those given) on top."""
    raw = dict(block or {})
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ConfigError(f"unknown launcher key {unknown[0]!r}; valid: {', '.join(sorted(_FIELDS))}")
    raw |= {k: v for k, v in flags.items() if v is not None}
    return Launcher(**raw).check()


def executor(launcher: Launcher, folder: Path, tasks: int = 1, nodes: int = 1) -> Any:
    """A submitit executor for ``launcher`` writing its pickles and logs under ``folder``."""
    import submitit

    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="local" if launcher.kind == "submitit-local" else "slurm")
    params: dict[str, Any] = {"timeout_min": launcher.time_min, "tasks_per_node": tasks, "nodes": nodes,
                              "gpus_per_node": launcher.gpus, "name": "probclr"}
    if launcher.kind == "slurm":
        params |= {"slurm_partition": launcher.partition, "cpus_per_task": launcher.cpus,
                   "slurm_array_parallelism": launcher.parallel}
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def record_jobs(out: Path, kind: str, jobs: list[Any], names: list[str]) -> None:
    """``out/jobs.json``: the launcher and the job id of every submitted point (or task)."""
    atomic_write_json(out / "jobs.json", {"launcher": kind, "jobs": {n: str(j.job_id) for n, j in zip(names, jobs,
                                                                                                    strict=True)}})


def _threads_per_task() -> None:
    """Split this node's CPUs between its tasks, as --nproc does."""
    import torch

    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))


class PretrainTask:
    """One rank of a (multi-node) pretraining: the process group from submitit's job environment, then the same
    code path as torchrun; requeued, every rank resumes from the run's last checkpoint."""

    def __init__(self, cfg: Config, out: str, command: list[str]) -> None:
        self.cfg, self.out, self.command = cfg, out, command

    def __call__(self) -> str:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        _threads_per_task()
        resume = RunDir(Path(self.out)).last.is_file()
        result = pretrain(self.cfg, Path(self.out), resume=resume, command=self.command)
        return str(result.run_dir)

    def checkpoint(self, *args: Any) -> Any:
        """submitit calls this on pre-emption or timeout: requeue the same call (it resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


def submit_array(task: Any, names: list[str], out: Path, launcher: Launcher) -> list[Any]:
    """One array job running ``task(name)`` for each name; returns submitit's jobs (``out/jobs.json`` records
    their ids, ``out/submitit/`` holds the pickles and logs)."""
    ex = executor(launcher, out / "submitit")
    jobs = ex.map_array(task, names)
    record_jobs(out, launcher.kind, jobs, names)
    return list(jobs)


def submit_pretrain(cfg: Config, out: Path, command: list[str], launcher: Launcher) -> Any:
    """One job of ``nodes`` x ``tasks`` ranks running :class:`PretrainTask`; its pickles, logs and ``jobs.json``
    go to ``<out>.submitit/`` beside the run directory (which keeps one writer: the job's rank 0)."""
    folder = out.parent / f"{out.name}.submitit"
    folder.mkdir(parents=True, exist_ok=True)
    ex = executor(launcher, folder, tasks=launcher.tasks, nodes=launcher.nodes)
    job = ex.submit(PretrainTask(cfg, str(out), command))
    record_jobs(folder, launcher.kind, [job], ["pretrain"])
    return job
