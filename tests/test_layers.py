"""The floor plan holds: imports point down the layers (cli -> studies -> analysis -> the library's api ->
eval -> train -> run -> probes -> model -> data -> core), no module imports a probclr module inside a
function (the arrows stay visible), and every public function and class of the library has a docstring."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = {"config", "errors", "io", "device", "distributed", "provenance"}
LAYERS = ["core", "data", "model", "probes", "run", "train", "eval", "api", "analysis", "studies", "cli"]


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("analysis", "studies", "cli"):
        return parts[0]
    if parts[0] != "probclr" or len(parts) == 1:
        return "api"  # probclr/__init__.py: the package's lazy front door
    return "core" if parts[1] in CORE else "api" if parts[1] == "api" else parts[1]


def modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("probclr", "analysis", "studies", "cli"):
        for f in sorted((ROOT / top).rglob("*.py")):
            rel = f.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            out.append((name, f))
    return out


def imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import of a project module."""
    inner = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(fn)}
    found = []
    for n in ast.walk(tree):
        names = [n.module] if isinstance(n, ast.ImportFrom) and n.module and n.level == 0 else \
            [a.name for a in n.names] if isinstance(n, ast.Import) else []
        for m in names:
            if m.split(".")[0] in ("probclr", "analysis", "studies", "cli"):
                found.append((m, id(n) in inner))
    return found


@pytest.mark.parametrize(("name", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_point_down_and_stay_at_the_top(name, path):
    tree = ast.parse(path.read_text())
    mine = LAYERS.index(layer(name))
    for target, in_function in imports(tree):
        assert LAYERS.index(layer(target)) <= mine, f"{name} ({layer(name)}) imports {target} ({layer(target)})"
        if in_function and not name.startswith("cli") and name != "probclr":
            # the command line imports lazily for its start-up time; `probclr` lazily exposes its API
            raise AssertionError(f"{name} imports {target} inside a function: the arrow is hidden")


def test_every_public_library_function_has_a_docstring():
    missing = []
    for name, path in modules():
        if not name.startswith(("probclr", "analysis", "studies")):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_") \
                    and ast.get_docstring(node) is None:
                missing.append(f"{name}.{node.name}")
    assert not missing, f"{len(missing)} public definitions without a docstring: {', '.join(missing[:20])}"


def test_the_analysis_wings_point_one_way():
    """analysis.measures computes and never draws: it imports neither the reports wing nor the pipeline."""
    for name, path in modules():
        if name.startswith("analysis.measures"):
            for target, _ in imports(ast.parse(path.read_text())):
                assert not target.startswith(("analysis.reports", "analysis.analyze")), f"{name} imports {target}"
