import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# under pytest-xdist (-n 2: one worker per core) each worker, and every process a test starts, uses one thread
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
if THREADS == 1:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def shared_data_dir() -> Path | None:
    env = os.environ.get("PROBCLR_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "cifar10-jpeg" / "train").is_dir():
            return cand
    return None


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test decodes into a per-session temporary cache, never the user's."""
    monkeypatch.setenv("PROBCLR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The real CIFAR-10 JPEG copies. In CI they must be there: a missing copy fails, it never skips."""
    d = shared_data_dir()
    if d is None:
        if os.environ.get("CI"):
            pytest.fail("CI=true but no CIFAR-10 copy: set PROBCLR_DATA_DIR to the folder holding cifar10-jpeg")
        pytest.skip("no CIFAR-10 copy here (set PROBCLR_DATA_DIR to the folder holding cifar10-jpeg)")
    return d / "cifar10-jpeg"


@pytest.fixture(scope="session")
def cifar_slice(cifar_dir, tmp_path_factory):
    """A real slice of CIFAR-10: the first 60 train and 20 test JPEGs of every class, as an image folder."""
    import shutil

    root = tmp_path_factory.mktemp("cifar_slice")
    for split, n in (("train", 60), ("test", 20)):
        for cls in sorted(p.name for p in (cifar_dir / split).iterdir()):
            dst = root / split / cls
            dst.mkdir(parents=True)
            for f in sorted((cifar_dir / split / cls).iterdir())[:n]:
                shutil.copy(f, dst / f.name)
    return root
