"""benchmarks/keep_records.py: the record files of a run tree are copied with their layout, nothing else."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "keep_records.py"


def _tree(root: Path) -> None:
    files = {
        "sweep.json": "{}", "points/a-s0/done.json": '{"rows": []}', "points/a-s0/metrics.jsonl": "{}\n",
        "points/a-s0/config.yaml": "seed: 0\n", "points/a-s0/eval/last/results.json": '{"rows": [1]}',
        "points/a-s0/checkpoints/last.pt": "weights", "points/a-s0/embeddings/cache/results.json": "derived",
        "points/a-s0/stdout.log": "log", "supervised/tuning/fraction0.1_ab.json": "{}",
        "supervised/tuning/fraction0.1_ab.pt": "weights", "supervised/points/fraction0.1_seed0.json": "{}",
        # a sweep point still running (no done.json, some checkpoints evaluated) and an unfinished protocol run
        "points/b-s1/metrics.jsonl": "{}\n", "points/b-s1/config.yaml": "seed: 1\n",
        "points/b-s1/eval/epoch_0000/results.json": "{}", "runs/simclr-s2/metrics.jsonl": "{}\n",
        "runs/simclr-s2/config.yaml": "seed: 2\n", "runs/random/metrics.jsonl": "",
        "runs/random/eval/last/results.json": "{}",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _keep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_copies_records_of_finished_runs_only_and_keeps_the_layout(tmp_path):
    src, dest = tmp_path / "sweep", tmp_path / "kept"
    _tree(src)
    res = _keep(str(src), str(dest))
    assert res.returncode == 0, res.stderr
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == ["points/a-s0/config.yaml", "points/a-s0/done.json", "points/a-s0/eval/last/results.json",
                    "points/a-s0/metrics.jsonl", "runs/random/eval/last/results.json", "runs/random/metrics.jsonl",
                    "supervised/points/fraction0.1_seed0.json", "supervised/tuning/fraction0.1_ab.json", "sweep.json"]
    assert (dest / "points/a-s0/eval/last/results.json").read_text() == '{"rows": [1]}'
    assert _keep(str(src), str(dest)).returncode == 0  # the same contents again: fine


def test_refuses_to_overwrite_a_different_record_and_copies_nothing(tmp_path):
    src, dest = tmp_path / "sweep", tmp_path / "kept"
    _tree(src)
    (dest / "points/a-s0").mkdir(parents=True)
    (dest / "points/a-s0/done.json").write_text('{"rows": ["older"]}')
    res = _keep(str(src), str(dest))
    assert res.returncode == 2 and "exists with other contents" in res.stderr and "Traceback" not in res.stderr
    assert not (dest / "sweep.json").exists()  # refused before anything was copied
    assert _keep(str(src), str(dest), "--replace").returncode == 0
    assert (dest / "points/a-s0/done.json").read_text() == '{"rows": []}'


def test_a_missing_source_is_one_line_and_exit_2(tmp_path):
    res = _keep(str(tmp_path / "nope"), str(tmp_path / "kept"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not a directory" in res.stderr
    assert not (tmp_path / "kept").exists()
