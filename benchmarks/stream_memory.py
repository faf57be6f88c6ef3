"""Peak memory of pretraining's data path for an image folder 4x larger than a memory cap (BENCHMARKS.md §13).

Writes a synthetic JPEG folder (``train/<class>/``, ``test/<class>/``) whose decoded images take ``--factor``
times ``--cap-mb``, then, for each residency, runs a child process inside a cgroup-v1 memory cgroup capped at
``--cap-mb`` (anonymous memory and page cache together; swap too where the kernel accounts it) that does what
``probclr pretrain`` does with its data -- ``load_data`` (decode or load the cache, channel statistics, the
batch source) -- and then reads one epoch of seeded shuffled batches of ``--batch`` images from the source.
The model's memory does not grow with the dataset and is left out. Reported per residency: exit status (137 =
killed by the cap), peak resident memory of the child (VmHWM), its peak anonymous memory (RssAnon, sampled
every 50 ms), the cgroup's peak usage and how often it hit the cap, and the wall time.

    python benchmarks/stream_memory.py --out runs/stream-memory --cap-mb 1024 --factor 4 --size 128
    python benchmarks/stream_memory.py --out runs/stream-memory --cap-mb 1024 --factor 4 --size 128 --residency encoded

Also reported: the bytes each residency's cache entry keeps on disk (decoded maps vs the packed JPEGs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

CGROUP = Path("/sys/fs/cgroup/memory")


def make_folder(root: Path, n: int, size: int, classes: int = 10, test_share: float = 0.1) -> None:
    """n smooth random JPEGs of size x size (noise upsampled 8x: JPEG sizes like photos'), seeded."""
    from PIL import Image

    if (root / "done").is_file():
        return
    rng = np.random.default_rng(0)
    for i in range(n):
        split = "test" if i < n * test_share else "train"
        folder = root / split / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)
    (root / "done").write_text("ok")


def child(data_dir: str, cache: str, residency: str, batch: int) -> None:
    """Inside the cgroup: pretraining's data path on the folder, then one epoch of batches."""
    import torch

    from probclr.config import load_config
    from probclr.train.pretrain import load_data

    torch.set_num_threads(2)
    cfg = load_config(None, ["data.dataset=imagefolder", f"data.data_dir={data_dir}", f"data.cache_dir={cache}",
                             f"data.residency={residency}", f"optim.batch_size={batch}"])
    t0 = time.perf_counter()
    data, _ = load_data(cfg, torch.device("cpu"))
    data = data.drop_decoded()
    t_load = time.perf_counter() - t0
    order = torch.randperm(data.n, generator=torch.Generator().manual_seed(0))
    checksum = 0
    for start in range(0, data.n - batch + 1, batch):
        x = data.source.batch(order[start:start + batch])  # (B, 3, S, S) uint8
        checksum += int(x[:, :, 0, 0].sum())
    print(json.dumps({"residency_used": data.residency, "images": data.n, "load_s": t_load,
                      "epoch_s": time.perf_counter() - t0 - t_load, "checksum": checksum}))


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def run_capped(args: argparse.Namespace, residency: str) -> dict[str, object]:
    group = CGROUP / f"probclr-bench-{os.getpid()}-{residency}"
    group.mkdir()
    cap = args.cap_mb * 2**20
    (group / "memory.limit_in_bytes").write_text(str(cap))
    if (group / "memory.memsw.limit_in_bytes").exists():
        (group / "memory.memsw.limit_in_bytes").write_text(str(cap))
    cmd = [sys.executable, __file__, "--child", residency, "--out", str(args.out), "--batch", str(args.batch)]
    enter = f"echo $$ > {group}/cgroup.procs && exec " + " ".join(cmd)
    t0 = time.perf_counter()
    proc = subprocess.Popen(["sh", "-c", enter], stdout=subprocess.PIPE, text=True, env={**os.environ})
    peaks = {"VmHWM": 0, "RssAnon": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            st = _status(proc.pid)
            for k in peaks:
                peaks[k] = max(peaks[k], st.get(k, 0))
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    out, _ = proc.communicate()
    done.set()
    row: dict[str, object] = {"residency": residency, "rc": proc.returncode, "wall_s": time.perf_counter() - t0,
                              "peak_rss_mb": peaks["VmHWM"] / 2**20, "peak_anon_mb": peaks["RssAnon"] / 2**20,
                              "cgroup_peak_mb": int((group / "memory.max_usage_in_bytes").read_text()) / 2**20,
                              "cap_hits": int((group / "memory.failcnt").read_text())}
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if lines:
        row.update(json.loads(lines[-1]))
    cache = args.out / f"cache-{residency}"
    row["cache_mb"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20 if cache.is_dir() else 0
    group.rmdir()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/stream-memory"))
    ap.add_argument("--cap-mb", type=int, default=1024)
    ap.add_argument("--factor", type=float, default=4.0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--residency", action="append", help="stream, device, encoded (default stream and device)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(str(args.out / "images"), str(args.out / f"cache-{args.child}"), args.child, args.batch)
        return
    if not os.access(CGROUP, os.W_OK):
        sys.exit(f"error: {CGROUP} is not writable here; this benchmark needs a cgroup-v1 memory controller")
    n = int(args.factor * args.cap_mb * 2**20 / (3 * args.size**2) / 0.9) + 1  # train images = 90 %
    t0 = time.perf_counter()
    make_folder(args.out / "images", n, args.size)
    decoded = int(n * 0.9) * 3 * args.size**2
    print(f"folder: {n} JPEGs of {args.size}px ({decoded / 2**30:.2f} GiB decoded training images, "
          f"{decoded / (args.cap_mb * 2**20):.1f}x the {args.cap_mb} MiB cap), {time.perf_counter() - t0:.0f} s",
          flush=True)
    rows = []
    for residency in args.residency or ["stream", "device"]:
        rows.append(run_capped(args, residency))
        print(json.dumps(rows[-1]), flush=True)
    path = args.out / "stream_memory.json"  # rows of earlier invocations on this folder are kept
    earlier = json.loads(path.read_text())["rows"] if path.is_file() else []
    rows = [r for r in earlier if r["residency"] not in {x["residency"] for x in rows}] + rows
    result = {"cap_mb": args.cap_mb, "images": n, "size": args.size, "decoded_train_gib": decoded / 2**30,
              "batch": args.batch, "rows": rows}
    path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
