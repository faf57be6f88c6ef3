"""Copy the small record files of run, protocol or sweep directories into results/, keeping their layout.

    python benchmarks/keep_records.py runs/protocol results/cpu_protocol_recipe/records
    python benchmarks/keep_records.py runs/sweeps/epochs results/sweeps/epochs/records

What `probclr sweep report` and `benchmarks/summarise_protocol.py` read is kept (sweep.json, each point's
done.json, each run's eval results.json, metrics.jsonl, config.yaml, provenance.json, the supervised
results.json and its finished points, the JSON files in points/ and tuning/), so a table can be regenerated,
and a study finished later, from the committed copy: copy it back into the run directory and rerun the same
command, and finished points are read back. Checkpoints, model weights, embeddings and caches are left
behind, and so is a pretraining run that has not finished (it restarts from scratch). A file over 2 MB is
refused (records are kilobytes), and a file is never overwritten with different contents unless --replace is
given.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

RECORD_NAMES = frozenset({"sweep.json", "done.json", "results.json", "metrics.jsonl", "config.yaml", "run.json",
                          "provenance.json"})
RECORD_DIRS = frozenset({"points", "tuning"})  # a supervised run's finished points, as one JSON file each
SKIPPED_DIRS = frozenset({"checkpoints", "embeddings", "cache", "ckpt"})
MAX_BYTES = 2 * 1024 * 1024


class RefusedError(Exception):
    """A copy that would lose or mislabel something; nothing was copied."""


def record_files(src: Path) -> list[Path]:
    """The record files under ``src``, relative to it, sorted; an unfinished pretraining run is left out whole."""
    found = []
    for p in src.rglob("*"):
        rel = p.relative_to(src)
        record = p.name in RECORD_NAMES or (p.suffix == ".json" and p.parent.name in RECORD_DIRS)
        if p.is_file() and record and not SKIPPED_DIRS & set(rel.parts[:-1]) and not _in_unfinished_run(p, src):
            found.append(rel)
    return sorted(found)


def _in_unfinished_run(path: Path, src: Path) -> bool:
    """Whether ``path`` lies in a pretraining run (a folder with metrics.jsonl) that has not finished: a sweep
    point without its done.json, or a run without evaluation results. Its checkpoints are not kept, so it reruns
    from the start, and a kept metrics.jsonl would be appended to."""
    for run in [path.parent, *path.parent.parents]:
        if (run / "metrics.jsonl").is_file():
            if run.parent.name == "points" and (run.parent.parent / "sweep.json").is_file():
                return not (run / "done.json").is_file()
            return not any((run / "eval").glob("**/results.json"))
        if run == src:
            return False
    return False


def keep(src: Path, dest: Path, replace: bool = False) -> list[Path]:
    """Copy the record files of ``src`` to ``dest``; returns the copied paths (relative). Checks every file
    before copying any, so a refusal leaves ``dest`` untouched."""
    files = record_files(src)
    for rel in files:
        size = (src / rel).stat().st_size
        if size > MAX_BYTES:
            raise RefusedError(f"{src / rel}: {size} bytes is not a record (limit {MAX_BYTES}); not copied")
        target = dest / rel
        if target.exists() and not replace and not filecmp.cmp(src / rel, target, shallow=False):
            raise RefusedError(f"{target} exists with other contents; pass --replace to overwrite it")
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / rel)
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="a run, protocol or sweep directory")
    ap.add_argument("dest", type=Path, help="where the records go (e.g. under results/)")
    ap.add_argument("--replace", action="store_true", help="overwrite records that differ")
    args = ap.parse_args(argv)
    if not args.src.is_dir():
        print(f"{args.src}: not a directory (give a run, protocol or sweep directory)", file=sys.stderr)
        return 2
    try:
        files = keep(args.src, args.dest, args.replace)
    except RefusedError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"{len(files)} record file(s) from {args.src} in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
