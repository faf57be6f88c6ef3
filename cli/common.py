"""Shared CLI plumbing: config assembly from flags, and turning user errors into one line + exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from probclr.config import Config, flag_updates, load_config, merge, parse_overrides
from probclr.errors import ConfigError, ProbclrError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    # file names that are not UTF-8 arrive as surrogate escapes: print them escaped, never crash on them
    text = f"error: {message}".encode("utf-8", "backslashreplace").decode("utf-8")
    typer.echo(text[:2000], err=True)
    raise typer.Exit(code=2)


def user_errors(fn: F) -> F:
    """Run a command; a user error becomes ``error: <message>`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProbclrError as err:
            fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except KeyboardInterrupt:
            typer.echo("interrupted; outputs already completed are kept, nothing is half-written", err=True)
            raise typer.Exit(code=130) from None
        except OSError as err:
            if err.errno is None:
                raise
            where = f" {err.filename!r}" if err.filename else ""
            fail(f"{err.strerror or err}{where}")

    return wrapper  # type: ignore[return-value]


def assemble_config(
    config: Path | None,
    sets: list[str] | None,
    flags: list[tuple[Callable[[Config], object], object]] | None = None,
) -> Config:
    """YAML, then ``--set`` overrides, then the named flags: (field selector, value) pairs such as
    ``(lambda c: c.optim.epochs, epochs)``; a value of None means the flag was not given. A flag and a
    ``--set`` that give one key two different values are an error (which one wins would be a silent guess)."""
    cfg = load_config(config, sets or [])
    updates = flag_updates(flags or [])
    given = parse_overrides(sets or [])
    for key, value in updates.items():
        if key in given and given[key] != value:
            raise ConfigError(f"{key} is given twice, {value!r} by its flag and {given[key]!r} by --set; give it once")
    return merge(cfg, updates) if updates else cfg


def command_line(ctx: typer.Context | None = None) -> list[str]:
    """The command as typed, rebuilt from the parsed parameters (canonical, so it can be re-run)."""
    if ctx is None:
        return ["probclr", *sys.argv[1:]]
    import shlex

    parts = ["probclr", *ctx.command_path.split()[1:]]
    positional = {p.name for p in ctx.command.params if getattr(p, "param_type_name", "") == "argument"}
    for name, value in ctx.params.items():
        flag = "--" + name.rstrip("_").replace("_", "-")
        if value is None or value is False or value == []:
            continue
        if name in positional:
            parts += [str(v) for v in (value if isinstance(value, list | tuple) else [value])]
        elif value is True:
            parts.append(flag)
        elif isinstance(value, list | tuple):
            for v in value:
                parts += [flag, str(v)]
        else:
            parts += [flag, str(value)]
    return [shlex.quote(p) for p in parts]
