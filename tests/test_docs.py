"""Documents true by test: every dotted ``probclr.…`` name and every repository path that README.md, docs/ or
a docstring of the package names resolves (an import and attributes; a file or folder of the repository)."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"(?<![\w./-])probclr\.[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
PATH = re.compile(r"(?<![\w./-])((?:probclr|analysis|studies|cli|configs|benchmarks|docs|tests|results|examples)"
                  r"/[\w./-]*[\w/])")


def _texts():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    out = {p.relative_to(ROOT).as_posix(): p.read_text() for p in pages}
    for top in ("probclr", "analysis", "studies", "cli"):
        for f in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(f.read_text())
            nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef |
                                                                   ast.AsyncFunctionDef)]
            out[f.relative_to(ROOT).as_posix()] = "\n".join(ast.get_docstring(n) or "" for n in nodes)
    return out


def _resolves(name):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


TEXTS = _texts()


@pytest.mark.parametrize("where", sorted(TEXTS))
def test_every_named_module_and_path_exists(where):
    text = TEXTS[where]
    missing = [m.group(0) for m in DOTTED.finditer(text) if not _resolves(m.group(0))]
    missing += [m.group(1) for m in PATH.finditer(text)
                if not any(c in m.group(1) for c in "*{<") and not (ROOT / m.group(1)).exists()]
    assert not missing, f"{where} names what does not exist: {sorted(set(missing))}"


def test_the_check_finds_a_stale_name():
    assert not _resolves("probclr.syncbn") and _resolves("probclr.train.syncbn")
    assert not _resolves("probclr.model.losses.no_such_loss")
    assert DOTTED.findall("see probclr.model.losses.nt_xent.") == ["probclr.model.losses.nt_xent"]
