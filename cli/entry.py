"""The ``probclr`` console script: imports the command line lazily, so that Ctrl-C during the (slow, torch)
start-up imports is one line and exit 130, not a traceback."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> None:
    # exit at once: nothing has been done yet, and an import's bare `except:` could swallow KeyboardInterrupt
    sys.stderr.write("interrupted while starting; nothing was done\n")
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        from cli.main import main as run
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    run()
