"""The ``probclr`` console script: imports the command line lazily, so that Ctrl-C during the (slow, torch)
start-up imports is one line and exit 130, not a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from cli.main import main as run
    except KeyboardInterrupt:
        print("interrupted while starting; nothing was done", file=sys.stderr)
        raise SystemExit(130) from None
    run()
