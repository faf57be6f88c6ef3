"""Start N training processes on this machine, as ``torchrun --nproc-per-node N`` does, after checking the
configuration once in the parent (so a bad world size is one line and exit code 2, not N tracebacks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_local(argv: list[str], nproc: int, threads_per_process: int | None = None) -> int:
    """Run ``python -m cli.main *argv`` as ranks 0..nproc-1 of one process group; return the exit code.

    Rank 0's output goes to this terminal; the other ranks' stderr is kept in temporary files and shown
    only when a rank fails where rank 0 did not. SIGINT/SIGTERM are passed on to every rank.
    """
    port = free_port()
    threads = threads_per_process or max(1, (os.cpu_count() or 1) // nproc)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="probclr-ranks-") as tmp:
        try:
            for rank in range(nproc):
                env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                       "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
                logs.append(Path(tmp) / f"rank{rank}.err")
                err = None if rank == 0 else open(logs[-1], "wb")  # noqa: SIM115 - closed by the child's exit
                out = None if rank == 0 else subprocess.DEVNULL
                procs.append(subprocess.Popen([sys.executable, "-m", "cli.main", *argv], env=env, stdout=out,
                                              stderr=err))
                if err is not None:
                    err.close()
            codes = [p.wait() for p in procs]
        except KeyboardInterrupt:
            for p in procs:
                p.send_signal(signal.SIGINT)
            codes = [p.wait() for p in procs]
        if codes[0] == 0:
            for rank, code in enumerate(codes[1:], start=1):
                if code != 0:
                    lines = logs[rank].read_text(errors="replace").strip().splitlines()
                    sys.stderr.write(f"rank {rank}: {lines[-1] if lines else f'exit code {code}'}\n")
                    return code
        return codes[0]
