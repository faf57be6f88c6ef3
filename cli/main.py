"""The ``probclr`` command line: thin typed wrappers over the library (parse, call, print)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import assemble_config, command_line, fail, user_errors
from cli.progress import ProgressBar

if TYPE_CHECKING:
    from probclr.config import Config

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="probclr: SimCLR pretraining, label-fraction evaluation and uncertainty analysis.",
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set optim.lr=0.5")]
DatasetOpt = Annotated[str | None, typer.Option(help="digits | cifar10 | stl10 | imagefolder")]
DataDirOpt = Annotated[Path | None, typer.Option(help="dataset folder")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda")]


@app.callback()
def _root() -> None:
    """probclr: SimCLR pretraining, label-fraction evaluation and uncertainty analysis."""


LauncherOpt = Annotated[str | None, typer.Option(help="local (this machine) | submitit-local | slurm "
                                               "(these two: the cluster extra)")]
PartitionOpt = Annotated[str | None, typer.Option(help="slurm: partition")]
TimeOpt = Annotated[int | None, typer.Option(help="submitit: minutes per job; a timed-out job requeues and resumes")]


@app.command()
@user_errors
def pretrain(
    ctx: typer.Context,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    download: Annotated[bool, typer.Option(help="let torchvision download the dataset")] = False,
    epochs: Annotated[int | None, typer.Option(help="pretraining epochs")] = None,
    batch_size: Annotated[int | None, typer.Option(help="images per batch (2 views each)")] = None,
    device: DeviceOpt = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/pretrain"),
    resume: Annotated[bool, typer.Option(help="continue the run in --out")] = False,
    new_loss: Annotated[bool, typer.Option(help="probabilistic head + MC-InfoNCE likelihood loss")] = False,
    nproc: Annotated[int | None, typer.Option(help="processes on this machine (DDP with global negatives, as "
                                            "torchrun --nproc-per-node); optim.batch_size is the global batch")] = None,
    launcher: LauncherOpt = None,
    nodes: Annotated[int | None, typer.Option(help="submitit: nodes")] = None,
    gpus_per_node: Annotated[int | None, typer.Option(help="submitit: GPUs per node, one process each")] = None,
    partition: PartitionOpt = None,
    time_min: TimeOpt = None,
) -> None:
    """Pretrain an encoder with SimCLR (NT-Xent) and write a run directory."""
    from probclr.train.pretrain import Stopped
    from probclr.train.pretrain import pretrain as run_pretrain

    own = out / "config.yaml"
    if resume and config is None and own.is_file():
        config = own  # --resume needs only --out: the run's own config, plus any flag given now
    cfg = assemble_config(config, set_, [
        (lambda c: c.data.dataset, dataset), (lambda c: c.data.data_dir, str(data_dir) if data_dir else None),
        (lambda c: c.data.download, download or None), (lambda c: c.optim.epochs, epochs),
        (lambda c: c.optim.batch_size, batch_size), (lambda c: c.run.device, device), (lambda c: c.run.seed, seed),
        (lambda c: c.loss.name, "mc_infonce" if new_loss else None),
    ])
    if launcher not in (None, "local"):
        _submit_pretrain(ctx, cfg, out, launcher, nodes, gpus_per_node, nproc, partition, time_min)
        return
    if nproc is not None and nproc != 1:
        _launch(ctx, cfg, nproc)
        return
    try:
        with ProgressBar("pretrain") as bar:
            result = run_pretrain(cfg, out, resume=resume, on_progress=bar.update, command=command_line(ctx))
    except Stopped as stopped:
        typer.echo(str(stopped), err=True)
        raise typer.Exit(code=128 + stopped.signum) from None
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    typer.echo(f"pretrained {result.epochs} epochs ({result.steps} steps, {result.wall_s:.0f} s), "
               f"final loss {loss}; run directory: {result.run_dir}")


def _submit_pretrain(ctx: typer.Context, cfg: Config, out: Path, kind: str, nodes: int | None, gpus: int | None,
                     nproc: int | None, partition: str | None, time_min: int | None) -> None:
    """``pretrain --launcher submitit-local | slurm``: one job of nodes x tasks ranks (studies/cluster.py)."""
    from probclr.distributed import DistInfo
    from probclr.train.pretrain import check_world
    from studies.cluster import launcher_from, submit_pretrain

    tasks = gpus if gpus else (nproc or 1)
    chosen = launcher_from(None, kind=kind, nodes=nodes, gpus=gpus, tasks=tasks, partition=partition, time_min=time_min)
    check_world(cfg, DistInfo(0, chosen.nodes * chosen.tasks, 0))
    job = submit_pretrain(cfg, out, command_line(ctx), chosen)
    typer.echo(f"submitted {kind} job {job.job_id}: {chosen.nodes} node(s) x {chosen.tasks} process(es) -> {out}",
               err=True)
    if kind == "submitit-local":
        job.results()  # one result per rank; a failed rank raises with its log's path
        typer.echo(f"pretrained; run directory: {out}")


def _launch(ctx: typer.Context, cfg: Config, nproc: int) -> None:
    """``pretrain --nproc N``: check the world once here, then start N ranks (cli/launch.py)."""
    import os
    import shlex

    from cli.launch import launch_local
    from probclr.distributed import DistInfo
    from probclr.train.pretrain import check_world

    if nproc < 1:
        fail(f"--nproc must be >= 1, got {nproc}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fail("--nproc starts its own processes; under torchrun leave it out (torchrun sets the world size)")
    check_world(cfg, DistInfo(0, nproc, 0))
    if cfg.run.device == "cuda":
        import torch

        if torch.cuda.device_count() < nproc:
            fail(f"--nproc {nproc} with --device cuda needs {nproc} GPUs; this machine has {torch.cuda.device_count()}")
    words = shlex.split(" ".join(command_line(ctx)))[1:]
    i = words.index("--nproc")
    code = launch_local(words[:i] + words[i + 2:], nproc)
    if code:
        raise typer.Exit(code=code)


FractionOpt = Annotated[list[float] | None, typer.Option("--fraction", "-f", help="label fraction in (0, 1]; repeat")]
SeedsOpt = Annotated[int | None, typer.Option(help="label subsets per fraction (mean ± std)")]
SplitOpt = Annotated[str, typer.Option(help="score on test (reported numbers) or val (every choice)")]
# data settings that evaluation may change: which labeled images form the validation split, where the data is
EVALUATE_DATA_KEYS = ("data.val_size", "data.val_seed", "data.data_dir", "data.cache_dir")


@app.command()
@user_errors
def evaluate(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option(help="run directory written by pretrain")],
    fraction: FractionOpt = None,
    seeds: SeedsOpt = None,
    probe: Annotated[list[str] | None, typer.Option(help="linear | mlp | knn; repeat")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="a checkpoint other than the run's last")] = None,
    data_dir: DataDirOpt = None,
    method: Annotated[str, typer.Option(help="label for the result rows")] = "simclr",
    finetune: Annotated[bool, typer.Option(help="also fine-tune the whole encoder on each labeled subset")] = False,
    split: Annotated[str, typer.Option(help="score on test (reported numbers), val (every choice) or both (one "
                                            "fit of each probe scored on each)")] = "test",
    set_: SetOpt = None,
) -> None:
    """Frozen-encoder evaluation at label fractions: linear / MLP probes and kNN, mean ± std over seeds."""
    from analysis.reports.tables import format_table
    from probclr.config import merge
    from probclr.eval.evaluate import evaluate_run_splits
    from probclr.eval.labels import SPLITS
    from probclr.run.rundir import RunDir, config_from_checkpoint, load_run_checkpoint

    if split not in (*SPLITS, "both"):
        fail(f"--split must be one of {', '.join(SPLITS)}, both, got {split!r}")
    ckpt = checkpoint or RunDir(run).require_checkpoint()
    base = config_from_checkpoint(load_run_checkpoint(RunDir(run), ckpt))
    flags = {"eval.fractions": fraction, "eval.seeds": seeds, "eval.probes": probe}
    from probclr.config import parse_overrides

    updates = parse_overrides(set_ or [])
    fixed = [k for k in updates if not k.startswith("eval.") and k not in EVALUATE_DATA_KEYS]
    if fixed:
        fail(f"evaluate cannot change {fixed[0]} (the run's checkpoint fixes it); it takes eval.* and "
             f"{', '.join(EVALUATE_DATA_KEYS)}")
    updates.update({k: v for k, v in flags.items() if v is not None and v != []})
    if data_dir:
        updates["data.data_dir"] = str(data_dir)
    merged = merge(base, updates)
    scored = ("val", "test") if split == "both" else (split,)
    results = evaluate_run_splits(run, merged.eval, ckpt, None, method, command_line(ctx), finetune, scored,
                                  merged.data)
    for name, (rows, path) in results.items():
        if len(scored) > 1:
            typer.echo(f"{name}:")
        typer.echo(format_table(rows))
        typer.echo(f"results: {path} (and results.csv)")


@app.command()
@user_errors
def supervised(
    ctx: typer.Context,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    fraction: FractionOpt = None,
    seeds: SeedsOpt = None,
    steps: Annotated[int | None, typer.Option(help="optimiser steps per fraction")] = None,
    device: DeviceOpt = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/supervised"),
    split: SplitOpt = "test",
    tune: Annotated[bool, typer.Option(help="choose lr / weight decay / steps per fraction on the validation split"
                                             " (supervised.grid_*)")] = False,
) -> None:
    """Supervised baseline: the same encoder trained from scratch on each label fraction."""
    from analysis.reports.tables import format_table
    from probclr.eval.supervised import run_supervised

    cfg = assemble_config(config, set_, [
        (lambda c: c.data.dataset, dataset), (lambda c: c.data.data_dir, str(data_dir) if data_dir else None),
        (lambda c: c.eval.fractions, fraction or None), (lambda c: c.eval.seeds, seeds),
        (lambda c: c.supervised.steps, steps), (lambda c: c.run.device, device),
    ])
    if tune and steps is not None:
        fail("--steps fixes the step count; with --tune set the candidates with --set supervised.grid_steps=[...]")
    rows, path = run_supervised(cfg, out, cfg.eval.fractions, cfg.eval.seeds, command_line(ctx), split, tune)
    typer.echo(format_table(rows))
    typer.echo(f"results: {path} (and results.csv)")


@app.command()
@user_errors
def embed(
    run: Annotated[Path, typer.Option(help="run directory written by pretrain")],
    checkpoint: Annotated[Path | None, typer.Option(help="a checkpoint other than the run's last")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export h, mu (and kappa for --new-loss runs) and labels of clean train and test images."""
    from probclr.eval.embeddings import export_embeddings

    path = export_embeddings(run, checkpoint, str(data_dir) if data_dir else None)
    typer.echo(f"embeddings: {path}")


@app.command()
@user_errors
def export(
    run: Annotated[Path, typer.Option(help="run directory written by pretrain")],
    out: Annotated[Path, typer.Option(help="file to write")],
    format_: Annotated[str, typer.Option("--format", help="export (torch.export .pt2, recommended) | onnx | "
                                         "safetensors (+ model card) | torchvision (state dict) | torchscript")]
    = "export",
    checkpoint: Annotated[Path | None, typer.Option(help="a checkpoint other than the run's last")] = None,
    head: Annotated[bool, typer.Option("--head", help="export, onnx, safetensors: also the projection head "
                                       "(mu, and kappa for a --new-loss run)")] = False,
    image_size: Annotated[int | None, typer.Option(help="input side in pixels (default: the dataset's)")] = None,
) -> None:
    """Export the encoder for use without probclr (README: "Use the encoder in your own code")."""
    from probclr.eval.export import export_encoder

    path = export_encoder(run, format_, out, checkpoint, head, image_size)
    typer.echo(f"exported {format_}: {path}")


@app.command()
@user_errors
def analyze(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option(help="run directory with embeddings (`probclr embed --run RUN`)")],
    seeds: SeedsOpt = None,
    cifar10h: Annotated[Path | None, typer.Option(help="CIFAR-10H cifar10h-probs.npy, for human-label agreement")] = None,
    cifar10h_order: Annotated[Path | None, typer.Option(help=".npy: the CIFAR-10H row of every test image")] = None,
    ambiguity_images: Annotated[int, typer.Option(min=3, help="test images for the crop / corruption study")] = 10000,
    map_points: Annotated[int, typer.Option(min=31, help="test points in the t-SNE / UMAP maps (> perplexity 30)")] = 2000,
    data_dir: DataDirOpt = None,
    set_: SetOpt = None,
    split: Annotated[str, typer.Option(help="test, or val (for choices: writes RUN/analysis-val)")] = "test",
    maps: Annotated[str, typer.Option(help="2-D maps, comma-separated: tsne, umap (umap: the umap extra)")]
    = "tsne",
) -> None:
    """Calibration across label fractions, uncertainty quality, certainty vs ambiguity, embedding maps."""
    from analysis.analyze import analyze_run
    from probclr.config import parse_overrides

    updates = parse_overrides(set_ or [])
    fixed = [k for k in updates if not k.startswith("eval.")]
    if fixed:
        fail(f"analyze cannot change {fixed[0]} (the run's checkpoint fixes it); it takes eval.* settings")
    out = analyze_run(run, command_line(ctx), str(cifar10h) if cifar10h else None,
                      str(cifar10h_order) if cifar10h_order else None, seeds, ambiguity_images, map_points,
                      str(data_dir) if data_dir else None, updates, split,
                      tuple(m.strip() for m in maps.split(",") if m.strip()))
    typer.echo(f"analysis: {out} (tables *.csv, figures/, analysis.json)")


@app.command()
@user_errors
def report(
    ctx: typer.Context,
    runs: Annotated[list[Path], typer.Argument(help="run directories (pretrain or supervised) to compare")],
    out: Annotated[Path, typer.Option(help="output directory for report.html and summary.md")] = Path("report"),
    title: Annotated[str, typer.Option(help="report title")] = "probclr report",
) -> None:
    """One self-contained HTML report and a Markdown summary comparing runs side by side."""
    from analysis.reports.report import write_report

    html_path, md_path = write_report(runs, out, " ".join(command_line(ctx)), title)
    typer.echo(f"report: {html_path}\nsummary: {md_path}")


@app.command()
@user_errors
def bench(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    steps: Annotated[int, typer.Option(min=1, help="timed steps per measurement")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="untimed steps first")] = 3,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader workers of the per-image peer pipeline")] = 2,
    out: Annotated[Path, typer.Option(help="JSON result file")] = Path("bench/bench.json"),
) -> None:
    """Images/s of augmentation, the model step (ceiling), the full step, and a per-image DataLoader pipeline."""
    from probclr.io import atomic_write_json
    from studies.bench import run_bench

    cfg = assemble_config(config, set_)
    res = run_bench(cfg, steps, warmup, workers)
    atomic_write_json(out, res)
    r, q = res["images_per_s"], res["ratios"]
    typer.echo(f"device {res['device']}, {res['backbone']}, batch {res['batch_size']}, bf16 {res['bf16']}")
    for k, v in r.items():
        typer.echo(f"  {k:16s} {v:10.0f} images/s")
    typer.echo(f"  full step / model ceiling {q['full_vs_ceiling']:.2f}; full step / per-image DataLoader"
               f" {q['full_vs_peer']:.2f}")
    typer.echo(f"written: {out}")


sweep_app = typer.Typer(help="Grids of runs over config keys and seeds: `sweep --config` runs, `sweep report` sums up.",
                        invoke_without_command=True, no_args_is_help=False)
app.add_typer(sweep_app, name="sweep")


@sweep_app.callback()
@user_errors
def sweep(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="sweep YAML (see configs/sweeps/)")] = None,
    out: Annotated[Path | None, typer.Option(help="sweep directory (default runs/sweeps/NAME)")] = None,
    jobs: Annotated[int | None, typer.Option(min=1, help="points at once (default: the sweep's, 1 on 2 cores)")] = None,
    launcher: LauncherOpt = None,
    partition: PartitionOpt = None,
    time_min: TimeOpt = None,
    gpus_per_point: Annotated[int | None, typer.Option(help="slurm: GPUs per point")] = None,
    cpus_per_point: Annotated[int | None, typer.Option(help="slurm: CPUs per point")] = None,
    parallel: Annotated[int | None, typer.Option(help="slurm: points running at once (array %N)")] = None,
    wait: Annotated[bool | None, typer.Option(help="wait for submitted points (default: yes for submitit-local, "
                                              "no for slurm)")] = None,
) -> None:
    """Run every unfinished point of a sweep (resumable: finished points are never retrained)."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        fail("sweep needs --config SWEEP.yaml (see configs/sweeps/), or the subcommand `report SWEEP_DIR`")
    from studies.cluster import launcher_from
    from studies.sweep import load_spec, run_sweep

    spec = load_spec(config)
    chosen = launcher_from(spec.launcher, kind=launcher, partition=partition, time_min=time_min, gpus=gpus_per_point,
                           cpus=cpus_per_point, parallel=parallel)
    target = out or Path("runs") / "sweeps" / spec.name
    waiting = wait if wait is not None else chosen.kind != "slurm"
    records = run_sweep(config, target, command_line(ctx), jobs, log=lambda s: typer.echo(s, err=True),
                        launcher=chosen, wait=waiting)
    typer.echo(f"sweep: {len(records)} points finished in {target}; summarise with `probclr sweep report {target}`")


@sweep_app.command("report")
@user_errors
def sweep_report_cmd(sweep_dir: Annotated[Path, typer.Argument(help="a sweep directory")]) -> None:
    """One table and one figure for a sweep (mean ± std over seeds)."""
    from analysis.reports.sweep_report import sweep_report

    csv, md, fig = sweep_report(sweep_dir)
    typer.echo(md.read_text())
    typer.echo(f"table: {csv}\nfigure: {fig}")


def _repo_config(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / name


@app.command()
@user_errors
def demo(
    ctx: typer.Context,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/demo"),
) -> None:
    """The main job on the embedded digits (no download): pretrain, probe, baselines, table and plot."""
    from analysis.reports.tables import comparison_table, format_table
    from studies.demo import run_demo

    path: Path | None = config or _repo_config("digits_demo.yaml")
    if config is None and path is not None and not path.exists():
        path = None  # installed without the repository's configs/: the defaults are the demo's digits
    cfg = assemble_config(path, set_)  # a --config that does not exist is an error, never the defaults
    with ProgressBar("pretrain") as bar:
        res = run_demo(cfg, out, bar.update, command_line(ctx), log=lambda s: typer.echo(s, err=True))
    typer.echo(format_table(res.rows))
    typer.echo("\ntest accuracy (%) by label fraction, mean ± std over label subsets:")
    typer.echo(comparison_table([r for r in res.rows if r.probe != "knn"]).to_string())
    typer.echo(f"\nresults: {res.results}\nfigure:  {res.figure}")



@app.command()
@user_errors
def controlled(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="study directory (resumable: finished method/seed pairs are kept)")] =
        Path("runs/controlled"),
    seeds: Annotated[int | None, typer.Option(min=1, help="seeds 0..N-1 (default 5; 2 with --quick)")] = None,
    quick: Annotated[bool, typer.Option(help="a small budget (about 90 s on 2 CPU cores), for a first look")]
        = False,
    split: SplitOpt = "test",
    method: Annotated[list[str] | None, typer.Option(help="only these methods (repeat the flag; default: all)")]
        = None,
) -> None:
    """A positive control with known posteriors: every method trained on pairs from a known process, measured
    against the truth (kappa ranking, mu up to rotation, coverage of credible regions)."""
    from studies.controlled.study import run_controlled

    res = run_controlled(out, seeds or (2 if quick else 5), quick, split, method, command_line(ctx),
                         log=lambda s: typer.echo(s, err=True))
    typer.echo(res.table.read_text())
    typer.echo(f"results: {res.results}\ntable:   {res.table}\nfigure:  {res.figure}")

def main() -> None:
    """Entry point: like ``app()``, but a usage error (bad flag or flag value) is one line and exit 2."""
    import sys

    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="probclr", standalone_mode=False)
    except Exception as err:  # click's UsageError / BadParameter, vendored by typer
        if getattr(err, "exit_code", None) == 2 and hasattr(err, "format_message"):
            typer.echo(f"error: {err.format_message()} (see probclr --help)", err=True)
            sys.exit(2)
        if type(err).__name__ == "Abort":
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
