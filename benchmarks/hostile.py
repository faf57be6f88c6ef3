"""The hostile-input campaign behind BENCHMARKS §10: every case run, its outcome classified and counted.

    PROBCLR_DATA_DIR=../shared/data python benchmarks/hostile.py [--out FILE.json]

Each case is a command that must be refused: exit code 2, one line naming the problem, no traceback, and
nothing created where nothing should be. Outcomes: handled; wrong result (it ran, exit 0); traceback (any
other exit, "Traceback" in the output, or more than one line); unclear message (one line that does not
name the problem); hung (over 120 s); corrupted (a path that must not exist does,
or a run directory that must be unchanged changed). Classes follow the reliability issue: every numeric
config field with NaN / inf / wrong types, config files, run-directory readers on missing / empty / crafted
/ damaged inputs, sweep specs, datasets (CIFAR batches, image bombs, non-UTF-8 names), options a command
cannot honour.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import signal
import tempfile
import typing
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from typer.testing import CliRunner

from cli.main import app
from probclr.config import Config

runner = CliRunner()


@dataclasses.dataclass
class Case:
    cls: str
    args: list[str]
    expect: str  # text the one-line error must contain
    absent: tuple[Path, ...] = ()  # paths that must not exist afterwards
    unchanged: Path | None = None  # a folder whose contents must not change


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ".lock":  # the lock records its last holder: that is its job
            h.update(str(p.relative_to(folder)).encode("utf-8", "surrogateescape") + p.read_bytes())
    return h.hexdigest()


def run_case(case: Case) -> str:
    before = _digest(case.unchanged) if case.unchanged else None

    def alarm(signum: int, frame: Any) -> None:
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(120)
    try:
        res = runner.invoke(app, case.args)
    except TimeoutError:
        return "hung"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out = res.output
    if res.exit_code == 0:
        return "wrong result"
    if res.exit_code != 2 or "Traceback" in out or (res.exception and not isinstance(res.exception, SystemExit)):
        return "traceback"
    if any(p.exists() for p in case.absent) or (before is not None and _digest(case.unchanged) != before):
        return "corrupted"
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if len(lines) != 1:
        return "traceback"
    return "handled" if case.expect in lines[0] else "unclear message"


def numeric_fields() -> list[tuple[str, type]]:
    """Every int / float (or optional int / float) field of every config section."""
    out = []
    sections = typing.get_type_hints(Config)
    for sec in dataclasses.fields(Config):
        cls = sections[sec.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            if args[0] in (int, float) and len(args) == 1:
                out.append((f"{sec.name}.{f.name}", args[0]))
    return out


def config_cases(t: Path) -> list[Case]:
    cases = []
    for key, _ in numeric_fields():
        for value in (".nan", ".inf", "-.inf", "abc", "[1, 2]", "{a: 1}"):
            out = t / f"cfg-{key}-{len(cases)}"
            cases.append(Case("numeric config values (NaN, inf, wrong types)", ["pretrain", "--set", f"{key}={value}",
                                                                              "--out", str(out)], key, (out,)))
    files = {"missing.yaml": None, "dir": "DIR", "binary.yaml": b"\xff\xfe\x00", "list.yaml": b"- 1\n",
             "scalar.yaml": b"3\n", "laughs.yaml": b"a: &a [x, x]\nb: &b [*a, *a]\n", "deep.yaml": b"x: " + b"[" * 3000,
             "badyaml.yaml": b"optim: {lr: [\n", "unknown.yaml": b"optim: {lerning_rate: 1}\n",
             "mixed.yaml": b"optim: {1: 2, lr: 3}\n"}
    for name, content in files.items():
        path = t / "files" / name
        path.parent.mkdir(exist_ok=True)
        if content == "DIR":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        out = t / f"file-{name}"
        cases.append(Case("config files", ["pretrain", "--config", str(path), "--out", str(out)], "error:", (out,)))
    cases.append(Case("config files", ["pretrain", "--config", "/dev/null", "--out", str(t / "dn")], "regular", ()))
    return cases


def crafted_run(run: Path, t: Path, name: str, change: Callable[[dict], None]) -> Path:
    """A copy of ``run`` whose last checkpoint ``change`` has edited (the hostile test uses it too)."""
    other = t / f"crafted-{name}"
    shutil.copytree(run, other)
    ckpt = other / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    change(state)
    torch.save(state, ckpt)
    return other


def reader_cases(t: Path, run: Path) -> list[Case]:
    (t / "empty").mkdir()
    (t / "afile").write_text("x")
    cases = []
    readers = {"evaluate": ["evaluate", "--run"], "embed": ["embed", "--run"], "analyze": ["analyze", "--run"],
               "export": ["export", "--out", str(t / "x.ts"), "--run"]}
    changes = {"no model": lambda s: s.pop("model"), "no config": lambda s: s.pop("config"),
               "no normalisation": lambda s: s["model"].pop("encoder.mean"),
               "epoch 'two'": lambda s: s.__setitem__("epoch", "two"),
               "negative epoch": lambda s: s.__setitem__("epoch", -1),
               "model of strings": lambda s: s.__setitem__("model", {"a": "b"}),
               "other model": lambda s: s["config"]["model"].__setitem__("convnet_widths", [8, 32])}
    for cname, change in changes.items():
        crafted = crafted_run(run, t, cname.replace(" ", "_").replace("'", ""), change)
        for prefix in readers.values():
            cases.append(Case("crafted checkpoints", [*prefix, str(crafted)], "error:", (t / "x.ts",)))
        cases.append(Case("crafted checkpoints", ["pretrain", "--out", str(crafted), "--resume"], "error:"))
    for prefix in readers.values():
        for target in ("nope", "empty", "afile"):
            cases.append(Case("missing / empty run directories", [*prefix, str(t / target)], "error:", (t / "x.ts",)))
    return cases


def damaged_cases(t: Path, run: Path) -> list[Case]:
    cases = []
    for cmd in (["evaluate", "--run", str(run), "--fraction", "0.5", "--seeds", "1"], ["embed", "--run", str(run)]):
        ok = runner.invoke(app, cmd)
        assert ok.exit_code == 0, ok.output
    for name, text in {"not json": "{", "a list": "[]", "wrong rows": '{"rows": [{"x": 1}]}', "no rows": "{}"}.items():
        d = t / f"damaged-{name.replace(' ', '_')}"
        shutil.copytree(run, d)
        (d / "eval" / "last" / "results.json").write_text(text)
        cases.append(Case("damaged JSON / CSV read back", ["report", str(d), "--out", str(t / f"rep-{d.name}")],
                          "damaged", (t / f"rep-{d.name}",)))
    sw = t / "sweep-damaged"
    sw.mkdir()
    (sw / "sweep.json").write_text("{oops")
    cases.append(Case("damaged JSON / CSV read back", ["sweep", "report", str(sw)], "damaged"))
    (t / "sweep-list").mkdir()
    (t / "sweep-list" / "sweep.json").write_text("[1]")
    cases.append(Case("damaged JSON / CSV read back", ["sweep", "report", str(t / "sweep-list")], "damaged"))
    return cases


def sweep_cases(t: Path) -> list[Case]:
    specs = {"set foo": "set: foo\n", "set int keys": "set: {1: 2}\n", "epochs abc": "epochs_to_evaluate: abc\n",
             "seeds negative": "seeds: [-1]\n", "jobs 0": "jobs: 0\n", "grid scalar": "grid: {optim.lr: 1}\n",
             "base int": "base: 3\n", "supervised yes": "supervised: 'yes'\n", "study bad": "study: nope\n",
             "unknown key": "gird: {}\n", "grid bad key": "grid: {lr: [1]}\n", "method list": "method: [a]\n",
             "grid bad value": "grid: {optim.epochs: [two]}\n", "empty grid": "grid: {}\n"}
    cases = []
    for name, text in specs.items():
        p = t / "sweeps" / f"{name.replace(' ', '_')}.yaml"
        p.parent.mkdir(exist_ok=True)
        p.write_text(text)
        out = t / f"sw-{p.stem}"
        cases.append(Case("sweep specs with wrong types", ["sweep", "--config", str(p), "--out", str(out)], "error:",
                          (out,)))
    return cases


def data_cases(t: Path) -> list[Case]:
    cases = []
    bad_batches = {"short rows": {"data": np.zeros((2, 3000), np.uint8), "labels": [1, 2]},
                   "string data": {"data": "x", "labels": [1, 2]}, "no labels": {"data": np.zeros((2, 3072), np.uint8)},
                   "label 99": {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 99]},
                   "labels string": {"data": np.zeros((2, 3072), np.uint8), "labels": "12"},
                   "too few labels": {"data": np.zeros((2, 3072), np.uint8), "labels": [1]},
                   "float data": {"data": np.zeros((2, 3072), np.float32), "labels": [1, 2]},
                   "not a dict": [1, 2, 3]}
    for name, entry in bad_batches.items():
        root = t / f"cifar-{name.replace(' ', '_')}" / "cifar-10-batches-py"
        root.mkdir(parents=True)
        good = {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}
        for b in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            with open(root / b, "wb") as fh:
                pickle.dump(entry if b == "data_batch_2" else good, fh)
        out = t / f"out-{root.parent.name}"
        cases.append(Case("malformed CIFAR-10 batches", ["pretrain", "--dataset", "cifar10", "--data-dir",
                                                          str(root.parent), "--out", str(out)], "error:", (out,)))
    from PIL import Image

    for name, size in {"strip": (1, 5000), "huge": (7000, 7000)}.items():
        d = t / f"img-{name}" / "a"
        d.mkdir(parents=True)
        if name == "strip":
            Image.new("RGB", size).save(d / "x.png")
        else:
            _png_header(d / "x.png", *size)
        out = t / f"out-img-{name}"
        cases.append(Case("absurd image sizes", ["pretrain", "--dataset", "imagefolder", "--data-dir", str(d.parent),
                                                 "--set", "data.image_size=32", "--out", str(out)], "error:", (out,)))
    for args, expect in ((["--data-dir", "/nonexistent"], "digits dataset is embedded"),
                         (["--dataset", "imagefolder"], "needs --data-dir"),
                         (["--dataset", "imagefolder", "--data-dir", str(t / "nope")], "does not exist"),
                         (["--dataset", "cifar10", "--data-dir", str(t / "empty")], "no CIFAR-10"),
                         (["--set", "data.image_size=100000"], "data.image_size"),
                         (["--set", "model.convnet_widths=[8, 8, 8, 8, 8]"], "cannot run on")):
        out = t / f"out-data-{len(cases)}"
        cases.append(Case("datasets and models that cannot run", ["pretrain", *args, "--out", str(out)], expect, (out,)))
    return cases


def _png_header(path: Path, w: int, h: int) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def option_cases(t: Path, run: Path) -> list[Case]:
    r = str(run)
    opts = [(["evaluate", "--run", r, "--split", "train"], "--split"), (["evaluate", "--run", r, "--seeds", "0"], "seeds"),
            (["evaluate", "--run", r, "--set", "optim.lr=1"], "cannot change"),
            (["evaluate", "--run", r, "--set", "model.proj_dim=3"], "cannot change"),
            (["evaluate", "--run", r, "--fraction", "0"], "fraction"),
            (["evaluate", "--run", r, "--fraction", "2"], "fraction"),
            (["evaluate", "--run", r, "--probe", "svm"], "probes"), (["evaluate", "--run", r, "--split", "val",
                                                                     "--set", "data.val_size=0"], "no validation split"),
            (["evaluate", "--run", r, "--set", "data.val_size=100000"], "val_size"),
            (["supervised", "--tune", "--steps", "3", "--out", str(t / "sup1")], "--steps fixes"),
            (["supervised", "--split", "nope", "--out", str(t / "sup2")], "--split"),
            (["export", "--run", r, "--format", "tflite", "--out", str(t / "e1")], "--format"),
            (["export", "--run", r, "--format", "torchvision", "--out", str(t / "e2")], "no torchvision model"),
            (["analyze", "--run", r, "--cifar10h", str(t / "nope.npy")], "does not exist"),
            (["pretrain", "--out", r], "already holds a run"), (["pretrain", "--out", r, "--resume", "--set", "optim.lr=9"],
                                                                 "differs in optim.lr"),
            (["pretrain", "--out", str(t / "nothing"), "--resume"], "nothing to resume"),
            (["pretrain", "--set", "run.loggers=[mlflow]", "--out", str(t / "lg")], "run.loggers"),
            (["report", r, r, "--out", str(t / "rep2")], "given twice")]
    return [Case("options a command cannot honour", a, e, (t / "sup1", t / "sup2", t / "e1", t / "e2", t / "lg", t / "rep2",
                                                          t / "nothing"), run if a[0] == "pretrain" else None)
            for a, e in opts]


def ambiguous_config_cases(t: Path) -> list[Case]:
    """Configs whose meaning is ambiguous: a key twice at any depth, a near-miss key, YAML 1.1 surprises."""
    files = {"dup-top.yaml": (b"optim: {lr: 1}\noptim: {lr: 2}\n", "given twice"),
             "dup-deep.yaml": (b"optim:\n  lr: 0.1\n  lr: 0.2\n", "given twice"),
             "case.yaml": (b"optim: {Batch_Size: 64}\n", "did you mean"),
             "dash.yaml": (b"optim: {batch-size: 64}\n", "did you mean"),
             "yes-as-number.yaml": (b"optim: {lr: yes}\n", "optim.lr"),
             "sweep-dup.yaml": (b"name: s\ngrid: {augment.strength: [0.5]}\ngrid: {augment.strength: [1.0]}\n",
                                "given twice")}
    cases = []
    for name, (content, expect) in files.items():
        path = t / "ambiguous" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        out = t / f"amb-{name}"
        cmd = ["sweep", "--config", str(path), "--out", str(out)] if name.startswith("sweep") else \
            ["pretrain", "--config", str(path), "--out", str(out)]
        cases.append(Case("configs whose meaning is ambiguous (a key twice, near-miss keys, YAML 1.1)", cmd, expect,
                          (out,)))
    out = t / "amb-set"
    cases.append(Case("configs whose meaning is ambiguous (a key twice, near-miss keys, YAML 1.1)",
                      ["pretrain", "--set", "optim.lr=0.1", "--set", "optim.lr=0.2", "--out", str(out)], "twice", (out,)))
    return cases


def tool_cases(t: Path, run: Path) -> list[Case]:
    """Exports, maps and launchers asked for what they cannot do."""
    r, spec = str(run), t / "tools-sweep.yaml"
    spec.write_text("name: tl\ngrid: {augment.strength: [0.5]}\n")
    opts = [(["export", "--run", r, "--format", "torchscript", "--head", "--out", str(t / "x1")], "--head needs"),
            (["export", "--run", r, "--image-size", "0", "--out", str(t / "x2")], "--image-size"),
            (["export", "--run", r, "--image-size", "99999", "--out", str(t / "x3")], "--image-size"),
            (["analyze", "--run", r, "--maps", "pca"], "unknown map"),
            (["analyze", "--run", r, "--maps", "tsne,tsne"], "each map once"),
            (["sweep", "--config", str(spec), "--out", str(t / "x4"), "--launcher", "lsf"], "--launcher must be"),
            (["sweep", "--config", str(spec), "--out", str(t / "x5"), "--launcher", "slurm", "--time-min", "0"],
             "time_min"),
            (["pretrain", "--launcher", "cluster", "--out", str(t / "x6")], "--launcher must be")]
    return [Case("exports, maps and launchers asked for the impossible", a, e,
                 tuple(t / f"x{i}" for i in range(1, 7)), run if a[0] != "sweep" else None) for a, e in opts]


def soft_label_cases(t: Path) -> list[Case]:
    """Soft-label pairs given what they cannot use: files of the wrong shape, values, type, or a missing one."""
    n = 1442  # the digits' pretraining images
    good = np.full((n, 10), 0.1)
    arrays = {"rows": good[:10], "one-class": good[:, :1], "negative": np.where(good > 0, -0.1, 0),
              "nan": np.full((n, 10), np.nan), "sums": good * 3, "strings": np.array([["a"] * 10] * n)}
    cases = []
    for name, arr in arrays.items():
        path = t / "soft" / f"{name}.npy"
        path.parent.mkdir(exist_ok=True)
        np.save(path, arr)
        cases.append((["--set", f"data.soft_labels={path}"], "data.soft_labels"))
    (t / "soft" / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    cases += [(["--set", f"data.soft_labels={t / 'soft' / 'junk.npy'}"], "not a readable .npy"),
              (["--set", f"data.soft_labels={t / 'soft' / 'absent.npy'}"], "is not a file"),
              (["--set", f"data.soft_labels={t / 'soft'}"], "is not a file"),
              ([], "needs data.soft_labels"),
              (["--set", f"data.soft_labels={t / 'soft' / 'rows.npy'}", "--set", "data.train_limit=200"],
               "data.train_limit")]
    out = []
    for i, (extra, expect) in enumerate(cases):
        run = t / f"soft-run-{i}"
        out.append(Case("soft-label pairs given what they cannot use",
                        ["pretrain", "--epochs", "1", "--set", "data.pairs=soft_labels", *extra, "--out", str(run)],
                        expect, (run,)))
    run = t / "soft-run-augment"
    out.append(Case("soft-label pairs given what they cannot use",
                    ["pretrain", "--set", f"data.soft_labels={t / 'soft' / 'rows.npy'}", "--out", str(run)],
                    "set data.pairs=soft_labels", (run,)))
    return out


def campaign() -> tuple[dict[str, Counter], list[tuple[str, str, str]]]:
    """Run every case in a fresh temporary folder: outcome counts per class, and the cases not handled."""
    t = Path(tempfile.mkdtemp(prefix="hostile-"))
    old_cache = os.environ.get("PROBCLR_CACHE_DIR")
    os.environ["PROBCLR_CACHE_DIR"] = str(t / "cache")
    try:
        run = t / "run"
        res = runner.invoke(app, ["pretrain", "--epochs", "1", "--batch-size", "64", "--set",
                                  "model.convnet_widths=[8, 16]", "--set", "model.proj_dim=16", "--out", str(run)])
        assert res.exit_code == 0, res.output
        cases = (config_cases(t) + reader_cases(t, run) + damaged_cases(t, run) + sweep_cases(t) + data_cases(t)
                 + option_cases(t, run) + ambiguous_config_cases(t) + tool_cases(t, run) + soft_label_cases(t))
        outcomes: dict[str, Counter] = {}
        failures = []
        for case in cases:
            outcome = run_case(case)
            outcomes.setdefault(case.cls, Counter())[outcome] += 1
            if outcome != "handled":
                failures.append((case.cls, " ".join(case.args)[:200], outcome))
        return outcomes, failures
    finally:
        if old_cache is None:
            os.environ.pop("PROBCLR_CACHE_DIR", None)
        else:
            os.environ["PROBCLR_CACHE_DIR"] = old_cache
        shutil.rmtree(t, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    outcomes, failures = campaign()
    cols = ["handled", "wrong result", "corrupted", "hung", "traceback", "unclear message"]
    print("| class | tried | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    total: Counter = Counter()
    for cls, c in outcomes.items():
        total.update(c)
        print(f"| {cls} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in cols) + " |")
    print(f"| **all** | **{sum(total.values())}** | " + " | ".join(f"**{total[k]}**" for k in cols) + " |")
    for f in failures:
        print("NOT HANDLED:", *f)
    if a.out:
        Path(a.out).write_text(json.dumps({"outcomes": {k: dict(v) for k, v in outcomes.items()}, "failures": failures},
                                          indent=2))


if __name__ == "__main__":
    main()
