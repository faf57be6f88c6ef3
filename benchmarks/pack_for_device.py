"""Pack what a lent GPU machine needs for benchmarks/device_suite.sh into one ignored folder (default .device/):
the CIFAR-10 JPEG folder as one .npz of its files' bytes (57 MB instead of 60,000 files, under the device
tool's 64 MiB tree limit), and unpacking it again. The device image has torch but not pyro-ppl: fetch its
pure-Python wheels here with

    python -m pip download --no-deps -d .device/whl pyro-ppl==1.9.2 pyro-api==0.1.2

    python benchmarks/pack_for_device.py pack ../shared/data/cifar10-jpeg .device/cifar10-jpeg.npz
    python benchmarks/pack_for_device.py unpack .device/cifar10-jpeg.npz /tmp/data/cifar10-jpeg   # on the device
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def pack(folder: Path, dest: Path) -> None:
    """Every file under ``folder`` (relative names, sorted) as one uint8 array of bytes, offsets and names."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    blobs = [p.read_bytes() for p in files]
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dest, data=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
             names=np.array([str(p.relative_to(folder)).encode() for p in files], dtype="S"))  # 1 byte a character
    print(f"{len(files)} files, {offsets[-1] / 1e6:.1f} MB -> {dest}")


def unpack(src: Path, folder: Path) -> None:
    """The files of a pack written back under ``folder``, byte for byte."""
    z = np.load(src)
    data, offsets = z["data"], z["offsets"]
    for i, name in enumerate(z["names"]):
        path = folder / bytes(name).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[offsets[i]:offsets[i + 1]].tobytes())
    print(f"{len(z['names'])} files -> {folder}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("verb", choices=["pack", "unpack"])
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    args = ap.parse_args()
    (pack if args.verb == "pack" else unpack)(args.src, args.dest)


if __name__ == "__main__":
    main()
