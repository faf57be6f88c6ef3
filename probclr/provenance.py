"""What every run directory says about itself: command line, git sha, versions, device, times."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("probclr", "torch", "torchvision", "numpy", "pyro-ppl", "scikit-learn", "pandas")


def git_sha(cwd: Path | None = None) -> str | None:
    """The commit of the probclr checkout (with ``-dirty`` when it has local changes), if any."""
    where = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def versions() -> dict[str, str]:
    """Python and the versions of the packages a result depends on."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def device_name(device: torch.device) -> str:
    """A readable name of the device (the GPU's, or the CPU with its thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: torch.device, command: list[str] | None = None) -> dict[str, Any]:
    """What reproduces a result: command, git sha, versions, device, time."""
    return {
        "command": " ".join(command if command is not None else sys.argv),
        "git_sha": git_sha(),
        "versions": versions(),
        "device": device_name(device),
        "host": platform.node(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),  # processes (torchrun or --nproc)
    }
