"""Sweeps: a base run config, named variants and a grid over any config keys, times seeds.

Every point is an ordinary run directory under ``SWEEP/points/``. A point is finished when its
``done.json`` exists (written atomically, last); finished points are never retrained or overwritten, and an
interrupted point resumes from its last checkpoint. The sweep's resolved spec is saved as
``SWEEP/sweep.json``; running another spec into the same directory is refused.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from probclr.config import Config, from_dict, load_config, merge, read_yaml_mapping, shown, to_dict
from probclr.errors import ConfigError, ProbclrError
from probclr.eval.evaluate import evaluate_run_splits
from probclr.eval.supervised import run_supervised
from probclr.io import DamagedFileError, atomic_write_json, read_json
from probclr.run.rundir import RunDir, config_diff
from probclr.train.pretrain import pretrain
from studies.cluster import Launcher, launcher_from, submit_array

STUDIES = ("generic", "epochs")
SPLITS = ("val", "test", "both")  # both: every point scored on validation (to choose) and test (to report)
_SPEC_KEYS = {"name", "base", "set", "variants", "grid", "seeds", "study", "epochs_to_evaluate", "supervised",
              "method", "jobs", "split", "launcher"}


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A sweep file: its base config, fixed overrides, grid, seeds, split and study."""
    name: str
    base: str | None  # base run config (YAML), relative to the sweep file
    set: dict[str, Any]  # overrides for every point
    variants: dict[str, dict[str, Any]]  # named override sets (e.g. an augmentation ablation)
    grid: dict[str, list[Any]]  # cartesian product over config keys
    seeds: list[int]  # pretraining seeds
    study: str = "generic"  # epochs: evaluate every kept epoch checkpoint of each run
    epochs_to_evaluate: list[int] | None = None
    supervised: bool = False  # also train the supervised baseline on the same label subsets, per seed
    method: str = "simclr"
    jobs: int = 1  # points run at once (1 on a 2-core machine)
    split: str = "val"  # val (a sweep chooses; the default), test (final numbers) or both (choose on val, report test)
    launcher: dict[str, Any] | None = None  # studies.cluster.Launcher fields: where the points run (SLURM, ...)


class Point:
    """One point of a sweep: its name, kind, parameters, config and seed."""
    def __init__(self, name: str, kind: str, params: dict[str, Any], cfg: Config, seed: int) -> None:
        self.name, self.kind, self.params, self.cfg, self.seed = name, kind, params, cfg, seed


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def load_spec(path: str | Path) -> SweepSpec:
    """Read and type-check a sweep file; bad keys and values are one line before anything trains."""
    p = Path(path)
    raw = read_yaml_mapping(p, "sweep config", "configs/sweeps/")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise ConfigError(f"unknown sweep key {sorted(unknown)[0]!r}; valid: {', '.join(sorted(_SPEC_KEYS))}")
    grid = raw.get("grid", None)
    if grid is not None and (not isinstance(grid, dict) or not grid):
        raise ConfigError("sweep grid is empty: give a mapping of config keys to lists of values, or omit it")
    for key, values in (grid or {}).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep grid key {key!r} needs a non-empty list of values, got {values!r}")
    variants = raw.get("variants") or {}
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise ConfigError("sweep variants must map names to mappings of config overrides")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"sweep seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    study = raw.get("study", "generic")
    if study not in STUDIES:
        raise ConfigError(f"sweep study must be one of {', '.join(STUDIES)}, got {study!r}")
    jobs = raw.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"sweep jobs must be an integer >= 1, got {jobs!r}")
    base = raw.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"sweep base must be a path to a YAML config, got {shown(base)}")
        base = str((p.parent / base).resolve())
    _check_spec_types(raw)
    name = str(raw.get("name", p.stem))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name) or ".." in name:
        raise ConfigError(f"sweep name {shown(name, 60)} must be a plain folder name (letters, digits, '.', '_', '-';"
                          " no '/' or '..'): it names a folder under runs/sweeps")
    return SweepSpec(
        name=name, base=base, set=dict(raw.get("set") or {}), variants=variants,
        grid=dict(grid or {}), seeds=seeds, study=study, epochs_to_evaluate=raw.get("epochs_to_evaluate"),
        supervised=bool(raw.get("supervised", False)), method=str(raw.get("method", "simclr")), jobs=jobs,
        split=str(raw.get("split", "val")), launcher=raw.get("launcher"),
    )


def _check_spec_types(raw: dict[str, Any]) -> None:
    """Every field's type, checked before any point trains (a wrong one used to surface only after)."""
    sets = raw.get("set") or {}
    if not isinstance(sets, dict) or not all(isinstance(k, str) for k in sets):
        raise ConfigError(f"sweep set must map config keys (section.key) to values, got {shown(sets)}")
    for name in [*sets, *(raw.get("grid") or {})]:
        if not isinstance(name, str) or name.count(".") != 1:
            raise ConfigError(f"sweep keys must look like section.key, got {shown(name)}")
    epochs = raw.get("epochs_to_evaluate")
    if epochs is not None and (not isinstance(epochs, list) or not epochs
                               or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in epochs)):
        raise ConfigError(f"sweep epochs_to_evaluate must be a non-empty list of integers >= 0, got {shown(epochs)}")
    for key in ("supervised",):
        if key in raw and not isinstance(raw[key], bool):
            raise ConfigError(f"sweep {key} must be true or false, got {shown(raw[key])}")
    if raw.get("split", "val") not in SPLITS:
        raise ConfigError(f"sweep split must be one of {', '.join(SPLITS)}, got {shown(raw.get('split'))}")
    for key in ("name", "method"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"sweep {key} must be a string, got {shown(raw[key])}")


MAX_POINTS = 10_000  # a sweep larger than this is a mistake on one machine (and a spec to split on a cluster)


def expand(spec: SweepSpec) -> list[Point]:
    """Every point of the sweep with its validated config (an invalid key or value names itself here)."""
    base = load_config(spec.base)
    try:
        common = merge(base, spec.set)
    except ConfigError as err:
        raise ConfigError(f"sweep 'set': {err}") from err
    variants = list(spec.variants.items()) or [("", {})]
    keys = list(spec.grid)
    count = len(variants) * len(spec.seeds) * math.prod(len(v) for v in spec.grid.values())
    if count > MAX_POINTS:  # counted before anything is built: a huge grid is refused, never expanded
        sizes = " x ".join(str(len(v)) for v in spec.grid.values()) or "1"
        raise ConfigError(f"the sweep has {count:,} points ({len(variants)} variant(s) x grid {sizes} x "
                          f"{len(spec.seeds)} seed(s)); at most {MAX_POINTS:,} — split it into several sweeps")
    points: list[Point] = []
    for (vname, overrides), combo in itertools.product(variants, itertools.product(*spec.grid.values())):
        params = {**({"variant": vname} if vname else {}), **dict(zip(keys, combo, strict=True))}
        for seed in spec.seeds:
            updates = {**overrides, **dict(zip(keys, combo, strict=True)), "run.seed": seed}
            try:
                cfg = merge(common, updates)
            except ConfigError as err:
                where = f"variant {vname!r}" if vname else "grid"
                raise ConfigError(f"sweep {where}: {err}") from err
            label = ",".join(f"{k.split('.')[-1]}={_slug(v)}" for k, v in params.items())
            name = f"{label},seed={seed}" if label else f"seed={seed}"
            points.append(Point(name, "pretrain", params, cfg, seed))
            if spec.supervised:
                points.append(Point(f"supervised,{name}", "supervised", params, cfg, seed))
    names = [pt.name for pt in points]
    if len(set(names)) != len(names):
        raise ConfigError("sweep points are not distinct: two grid values or variants give the same point")
    return points


def _spec_record(spec: SweepSpec, points: list[Point]) -> dict[str, Any]:
    return {"spec": dataclasses.asdict(spec),
            "points": {pt.name: {"kind": pt.kind, "params": pt.params, "config": to_dict(pt.cfg)} for pt in points}}


def _check_same_sweep(out: Path, record: dict[str, Any]) -> None:
    path = out / "sweep.json"
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ProbclrError(f"{str(out)!r} is not empty and holds no sweep.json: choose a new --out for the sweep")
        return
    old = read_json(path, "sweep record")
    if not isinstance(old.get("points"), dict) or not isinstance(old.get("spec"), dict):
        raise DamagedFileError(f"sweep record {str(path)!r} is damaged (no points or spec); use a new --out")
    for pname, prec in old["points"].items():
        new = record["points"].get(pname)
        if new is None:
            continue
        # configs compare as configs: a key added to probclr since, at its default, leaves a point unchanged
        diff = ", ".join(config_diff(from_dict(prec["config"]), from_dict(new["config"])))
        if diff or (new["kind"], new["params"]) != (prec["kind"], prec["params"]):
            raise ProbclrError(f"sweep directory {str(out)!r} was made from a different config: point {pname!r}"
                               f" differs in {diff or 'its parameters'}; use a new --out")
    free = {"jobs", "base"}  # how many run at once and where the base file lives do not change a point
    keys = [k for k in record["spec"] if k not in free and old["spec"].get(k) != record["spec"][k]
            and not (k == "seeds" and _more_seeds(old["spec"].get(k), record["spec"][k]))]
    if keys:
        raise ProbclrError(f"sweep directory {str(out)!r} was made from a different sweep config (differs in"
                           f" {', '.join(keys)}); use a new --out")


def _more_seeds(before: Any, now: list[int]) -> bool:
    """Seeds added to a sweep (every earlier seed kept) grow it: its finished points stay valid."""
    return isinstance(before, list) and set(before) <= set(now)


def run_point(point: Point, out: Path, spec: SweepSpec, command: list[str], threads: int | None = None) -> dict:
    """Train and evaluate one point (resuming it if interrupted); returns and writes its done record."""
    import torch


    if threads:
        torch.set_num_threads(threads)
    pdir = out / "points" / point.name
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    scored = ("val", "test") if spec.split == "both" else (spec.split,)
    if point.kind == "supervised":  # a reference, not a choice: scored on test alone when a sweep scores both
        split = "test" if spec.split == "both" else spec.split
        res, _ = run_supervised(point.cfg, pdir, point.cfg.eval.fractions, point.cfg.eval.seeds, command, split)
        rows = [dataclasses.asdict(r) | {"epoch": None, "split": split} for r in res]
    else:
        cfg = point.cfg
        if spec.study == "epochs":
            cfg = merge(cfg, {"run.keep_checkpoints": True})
        run = RunDir(pdir)
        if not run.last.exists() or _epochs_done(run) < cfg.optim.epochs:
            pretrain(cfg, pdir, resume=run.last.exists(), command=command)
        ckpts = [run.last]
        if spec.study == "epochs":
            wanted = spec.epochs_to_evaluate or list(range(cfg.optim.epochs + 1))
            ckpts = [run.epoch_checkpoint(e) for e in wanted if run.epoch_checkpoint(e).is_file()]
        for ckpt in ckpts:
            epoch = int(ckpt.stem.split("_")[-1]) if ckpt.stem.startswith("epoch_") else cfg.optim.epochs
            by_split = evaluate_run_splits(pdir, cfg.eval, ckpt, None, spec.method, command, scored=scored)
            for split in scored:  # every split scored from one fit of each probe
                rows += [dataclasses.asdict(r) | {"epoch": epoch, "split": split} for r in by_split[split][0]]
    record = {"point": point.name, "kind": point.kind, "params": point.params, "seed": point.seed,
              "wall_s": time.perf_counter() - t0, "rows": rows}
    atomic_write_json(pdir / "done.json", record)
    return record


def _epochs_done(run: RunDir) -> int:
    if not run.metrics_path.is_file():
        return 0
    lines = [ln for ln in run.metrics_path.read_text().splitlines() if ln.strip()]
    return int(json.loads(lines[-1])["epoch"]) if lines else 0


def run_sweep(
    spec_path: str | Path, out: str | Path, command: list[str], jobs: int | None = None,
    log: Callable[[str], None] = lambda s: None, launcher: Launcher | None = None, wait: bool = True,
) -> list[dict[str, Any]]:
    """Run every unfinished point (here, or submitted through ``launcher``); returns the done records of the
    finished points (all of them unless ``wait`` is False with a submitit launcher)."""
    spec = load_spec(spec_path)
    points = expand(spec)
    launcher = launcher or launcher_from(spec.launcher)
    out = Path(out)
    record = _spec_record(spec, points)
    _check_same_sweep(out, record)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", {**record, "command": " ".join(command)})
    todo = [pt for pt in points if not (out / "points" / pt.name / "done.json").is_file()]
    todo.sort(key=lambda pt: pt.kind == "supervised")  # the study's own points first, its references after
    log(f"sweep {spec.name!r}: {len(points)} points, {len(points) - len(todo)} already finished")
    if launcher.kind != "local":
        _submitted(spec_path, out, todo, command, launcher, wait, log)
    else:
        _run_here(spec, out, todo, command, jobs or spec.jobs, log)
    done = [out / "points" / pt.name / "done.json" for pt in points]
    return [read_json(p, "finished sweep point") for p in done if p.is_file()]


def _run_here(spec: SweepSpec, out: Path, todo: list[Point], command: list[str], jobs: int,
              log: Callable[[str], None]) -> None:
    if jobs <= 1:
        for i, pt in enumerate(todo, 1):
            log(f"[{i}/{len(todo)}] {pt.name}")
            run_point(pt, out, spec, command)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_point, pt, out, spec, command, threads) for pt in todo]
        for f in futures:
            rec = f.result()
            log(f"finished {rec['point']} in {rec['wall_s']:.0f} s")


def _submitted(spec_path: str | Path, out: Path, todo: list[Point], command: list[str], launcher: Launcher,
               wait: bool, log: Callable[[str], None]) -> None:
    if not todo:
        return
    jobs = submit_points(str(Path(spec_path).resolve()), out, [pt.name for pt in todo], command, launcher)
    log(f"submitted {len(jobs)} point(s) as one {launcher.kind} array job {str(jobs[0].job_id).split('_')[0]}"
        f" (ids in {out / 'jobs.json'}); `probclr sweep report {out}` works while they run")
    if wait:
        for pt, job in zip(todo, jobs, strict=True):
            job.result()  # a point that failed raises here, with its log path
            log(f"finished {pt.name}")


class PointTask:
    """One sweep point as a submitit task; requeued on pre-emption, it resumes from the point's own files."""

    def __init__(self, spec_path: str, out: str, command: list[str]) -> None:
        self.spec_path, self.out, self.command = spec_path, out, command

    def __call__(self, name: str) -> dict[str, Any]:
        spec = load_spec(self.spec_path)
        point = next(p for p in expand(spec) if p.name == name)
        return run_point(point, Path(self.out), spec, self.command)

    def checkpoint(self, *args: Any) -> Any:
        """submitit calls this on pre-emption or timeout: requeue the same call (it resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


def submit_points(spec_path: str, out: Path, names: list[str], command: list[str], launcher: Launcher) -> list[Any]:
    """The named points of a sweep as one array job (studies.cluster); returns submitit's jobs."""
    return submit_array(PointTask(str(spec_path), str(out), command), names, out, launcher)
