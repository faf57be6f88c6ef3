"""Reading a configuration: YAML files (no aliases, no key given twice, bounded nesting) and ``--set
section.key=value`` overrides, typed against the schema's annotations, then validated; writing it back.
An unknown key or a wrongly typed value is a :class:`ConfigError` naming the key."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml

from probclr.config.schema import Config
from probclr.config.validation import validate
from probclr.errors import ConfigError
from probclr.io import atomic_write_text

# --------------------------------------------------------------------------------------------------
# parsing


def shown(value: Any, limit: int = 80) -> str:
    """repr(value), cut to ``limit`` characters: error messages never print an unbounded value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors/aliases (a billion-laughs file is refused before anything is expanded)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise ConfigError("YAML aliases (*name) are not allowed in probclr configs; write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key given twice in one mapping is an error naming it and both lines (YAML's default: the last wins)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"key {shown(key, 60)} is given twice in one mapping (lines {seen[key]} and {line});"
                                  " give it once")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep)


def safe_yaml(text: str, what: str) -> Any:
    """Parse YAML text with no aliases and bounded nesting; errors are one line naming ``what``."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError as err:
        raise ConfigError(f"{what} is nested too deeply to be a config") from err
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} is not valid YAML: {err}".splitlines()[0][:300]) from err


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is Literal:
        if value not in args:
            hint = " (YAML reads an unquoted yes / no / on / off as a boolean: quote it)" if isinstance(value, bool) \
                and any(isinstance(a, str) for a in args) else ""
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, args))}, got {shown(value)}{hint}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {shown(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {shown(value)}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {shown(value)}")
        if abs(value) >= 2**62:
            raise ConfigError(f"{key} must be an integer below 2^62 in size, got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {shown(value)}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{key} must be a finite number, got {shown(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {shown(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in data if k not in names), key=str)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{str(unknown[0])[:60]}{_near(unknown[0], names)}; valid keys"
                          f" here: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(key, value, tp)
    return cls(**kwargs)


def _near(key: object, names: Any) -> str:
    """' (did you mean batch_size?)' for a key that differs from a real one only by case or '-' / '_'."""
    norm = str(key).casefold().replace("-", "_")
    same = [n for n in names if n.casefold() == norm]
    return f" (did you mean {same[0]}?)" if same else ""


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain-YAML form (tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override key must look like section.key, got {dotted!r}")
    section, key = parts
    if section not in tree:
        raise ConfigError(f"unknown config section {section!r} in {dotted!r}; valid: {', '.join(tree)}")
    if key not in tree[section]:
        valid = ", ".join(tree[section])
        raise ConfigError(f"unknown config key {dotted}{_near(key, tree[section])}; valid keys in {section}: {valid}")
    tree[section][key] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=0.5'`` -> ``('optim.lr', 0.5)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override must look like section.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    value = safe_yaml(raw, f"the value of {shown(key.strip(), 60)}") if raw.strip() else None
    return key.strip(), value


def merge(base: Config, updates: dict[str, Any]) -> Config:
    """Apply ``{'section.key': value}`` updates to ``base`` and validate the result."""
    tree = to_dict(base)
    for dotted, value in updates.items():
        _set_path(tree, dotted, value)
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


def read_yaml_mapping(path: str | Path, what: str, hint: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (empty file = {}); errors name the file and what is wrong."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a folder, not a YAML file (see {hint})")
    if not p.exists():
        raise ConfigError(f"{what} {str(p)!r} does not exist (see {hint})")
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} is not a regular file (see {hint})")
    try:
        text = p.read_bytes()[: (1 << 20) + 1].decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {str(p)!r} is not UTF-8 text (byte {err.start})") from err
    if len(text) > 1 << 20:
        raise ConfigError(f"{what} {str(p)!r} is larger than 1 MiB; not a config")
    loaded = safe_yaml(text, f"{what} {str(p)!r}") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {str(p)!r} must be a mapping")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``--set`` overrides; validated."""
    tree = read_yaml_mapping(path, "config file", "configs/ for examples") if path is not None else {}
    cfg = _build(Config, tree, "")
    return merge(cfg, parse_overrides(overrides or []))


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """Several ``--set`` overrides; one key given two different values is an error (which one wins would be a
    silent guess)."""
    updates: dict[str, Any] = {}
    for text in texts:
        key, value = parse_override(text)
        if key in updates and updates[key] != value:  # the same value twice is no ambiguity
            raise ConfigError(f"--set {key} is given twice ({shown(updates[key], 40)} and {shown(value, 40)}); give it once")
        updates[key] = value
    return updates


def from_dict(tree: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested mapping (YAML); unknown keys and bad values are ConfigErrors."""
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    """Write a Config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


class _FieldPath:
    """Records the attribute path a selector reads (``c.optim.batch_size`` -> ("optim", "batch_size"))."""

    def __init__(self, parts: tuple[str, ...] = ()) -> None:
        self.parts = parts

    def __getattr__(self, name: str) -> _FieldPath:
        return _FieldPath((*self.parts, name))


def field_key(select: Callable[[Config], object]) -> str:
    """The dotted key of the config field a selector reads: ``field_key(lambda c: c.optim.batch_size)`` is
    ``"optim.batch_size"``. Command-line flags name their field this way, so a reader (and an editor's
    go-to-definition) can follow a flag to its field; a key that is not a field is a ConfigError."""
    path = select(_FieldPath())  # type: ignore[arg-type]
    if not isinstance(path, _FieldPath) or len(path.parts) != 2:
        raise ConfigError("a flag must select one field of one config section, like lambda c: c.optim.epochs")
    section, key = path.parts
    sections = {f.name for f in dataclasses.fields(Config)}
    if section not in sections or key not in {f.name for f in dataclasses.fields(getattr(Config(), section))}:
        raise ConfigError(f"no config field {section}.{key}")
    return f"{section}.{key}"


def flag_updates(flags: list[tuple[Callable[[Config], object], object]]) -> dict[str, Any]:
    """``{field_key(select): value}`` for the flags that were given (value not None)."""
    return {field_key(select): value for select, value in flags if value is not None}
