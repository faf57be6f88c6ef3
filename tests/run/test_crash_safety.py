"""Runs that are stopped (SIGTERM/SIGINT) or killed (SIGKILL) at random moments resume to exactly the
weights and metrics of an uninterrupted run (CPU), and never leave a corrupt checkpoint behind."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

ARGS = ["pretrain", "--batch-size", "64", "--set", "model.convnet_widths=[8, 16]",
        "--set", "optim.warmup_epochs=0", "--set", "model.proj_dim=16", "--set", "run.num_threads=1"]


def _cmd(out, *extra, epochs=6):
    return [sys.executable, "-m", "cli.main", *ARGS, "--epochs", str(epochs), "--out", str(out), *extra]


def _final(out):
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    return state["model"], [{k: v for k, v in m.items() if k not in ("images_per_s", "epoch_s")}
                            for m in state["metrics"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(_cmd(out), check=True, capture_output=True, timeout=300)
    return _final(out)


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "long"
    subprocess.run(_cmd(out, epochs=KILL_EPOCHS), check=True, capture_output=True, timeout=600)
    return _final(out)


KILL_EPOCHS = 16


def _wait_for(path, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and not path.exists():
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_saves_mid_epoch_and_resume_is_exact(tmp_path, reference, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / "metrics.jsonl")  # epoch 0 written: training is under way
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 128 + sig, err
    assert "continue with --resume" in err and "Traceback" not in err
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert "partial" in state or state["epoch"] > 0
    # --resume needs only --out: the run's own config.yaml supplies every other setting
    subprocess.run([sys.executable, "-m", "cli.main", "pretrain", "--out", str(out), "--resume"], check=True,
                   capture_output=True, timeout=300)
    model, metrics = _final(out)
    assert metrics == reference[1]
    for k, v in reference[0].items():
        assert torch.equal(model[k], v), k


def _kill_when(proc, ready, timeout=120):
    """Poll every millisecond until ``ready()`` (or the process ends); then SIGKILL. True if it was killed."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline and not ready():
        time.sleep(0.001)
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait()
    return True


@pytest.mark.slow
def test_sigkills_at_the_sharp_moments_then_exact_result(tmp_path, long_reference):
    """SIGKILL where a run is most fragile: while it sets up (no checkpoint yet), while a checkpoint's temporary
    file is being written (the rename not yet done), right after a checkpoint lands, and at random moments of
    an epoch. After each kill the checkpoint left behind loads; resumed, the run ends exactly as one never
    killed (weights and metrics)."""
    out = tmp_path / "run"
    ckpts, last = out / "checkpoints", out / "checkpoints" / "last.pt"
    rng = random.Random(0)

    def in_write(before):
        seen = [before]
        def ready():  # a temporary checkpoint file exists; failing that, right after the second write lands
            if any(ckpts.glob(".last.pt.*.tmp")):
                return True
            now = last.stat().st_mtime_ns if last.exists() else None
            if now != seen[-1]:
                seen.append(now)
            return len(seen) > 2
        return ready

    def landed(before):
        return lambda: last.exists() and last.stat().st_mtime_ns != before

    def random_moment(before):
        wait = rng.uniform(0.0, 0.4)
        start = []
        def ready():
            if not start and landed(before)():
                start.append(time.time())
            return bool(start) and time.time() - start[0] >= wait
        return ready

    plan = ["setup", "write", "write", "write", "landed", "random", "random", "random"]
    killed = []
    for moment in plan:
        resume = ["--resume"] if last.exists() else []
        before = last.stat().st_mtime_ns if last.exists() else None
        proc = subprocess.Popen(_cmd(out, *resume, epochs=KILL_EPOCHS), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        ready = {"setup": lambda: (out / "config.yaml").exists(), "write": in_write(before),
                 "landed": landed(before), "random": random_moment(before)}[moment]
        if _kill_when(proc, ready):
            killed.append(moment)
        if last.exists():  # never corrupt or half-written: it always loads
            torch.load(last, weights_only=True)
    assert len(killed) >= 6, killed  # the run outlived at most two of the planned kills
    res = subprocess.run(_cmd(out, "--resume", epochs=KILL_EPOCHS), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    model, metrics = _final(out)
    assert metrics == long_reference[1]
    for k, v in long_reference[0].items():
        assert torch.equal(model[k], v), k
    assert not list(out.rglob("*.tmp"))  # temporary files of killed writes were cleaned up


def test_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from typer.testing import CliRunner

    import probclr.io as pio
    from cli.main import app

    original = pio._atomic

    def full_disk(path, write):
        if path.name == "last.pt" and path.exists():  # the second checkpoint: the disk fills up mid-write
            def half(fh):
                fh.write(b"PK\x03\x04 partial")
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(path, half)
        return original(path, write)

    monkeypatch.setattr(pio, "_atomic", full_disk)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [*ARGS, "--epochs", "3", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "No space left on device" in res.output and "Traceback" not in res.output
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)  # the previous one, intact
    assert state["epoch"] == 0
    assert not list((out / "checkpoints").glob(".last.pt.*"))  # no temporary file left behind


class _ReadOnly:
    """Make folders really read-only: chmod for a normal user; root ignores modes, so the immutable
    attribute (chattr +i) there. Undone on exit; skips the test only if neither is possible."""

    def __init__(self, *dirs):
        self.dirs = dirs
        self.root = os.geteuid() == 0

    def __enter__(self):
        for d in self.dirs:
            if self.root:
                res = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True)
                if res.returncode != 0:
                    self.__exit__()
                    pytest.skip(f"cannot make a folder read-only as root here: {res.stderr.strip()}")
            else:
                d.chmod(0o555)
        probe = self.dirs[0] / ".probe"
        with pytest.raises(OSError):  # the folder really is read-only now
            probe.touch()
        return self

    def __exit__(self, *exc):
        for d in self.dirs:
            if self.root:
                subprocess.run(["chattr", "-i", str(d)], capture_output=True)
            else:
                d.chmod(0o755)


EVAL_KILLS = 4  # of five planned kills, at least four land before the run ends


@pytest.mark.slow
def test_sigkilled_evaluation_leaves_only_whole_files_and_resumes_to_the_same_results(tmp_path):
    """Kill `probclr evaluate` at random moments (feature extraction, the feature-cache write, the probes,
    the results write): every file it leaves loads, and the next run gives the uninterrupted results."""
    import json
    import shutil

    run = tmp_path / "run"
    subprocess.run(_cmd(run, epochs=1), check=True, capture_output=True, timeout=300)
    ref = tmp_path / "ref"
    shutil.copytree(run, ref)

    def evaluate(where):
        return [sys.executable, "-m", "cli.main", "evaluate", "--run", str(where), "--fraction", "0.1",
                "--fraction", "1.0", "--seeds", "2", "--probe", "linear", "--probe", "knn",
                "--set", "eval.weight_decays=[1e-4]", "--set", "eval.max_iter=50"]

    t0 = time.time()
    subprocess.run(evaluate(ref), check=True, capture_output=True, timeout=300)
    first = time.time() - t0
    t0 = time.time()
    subprocess.run(evaluate(ref), check=True, capture_output=True, timeout=300)  # the shorter, cached path
    duration = time.time() - t0
    reference = json.loads((ref / "eval" / "last" / "results.json").read_text())["rows"]
    kills = 0
    # spread over the evaluation: the first two from a fresh cache (feature extraction, the cache write), the
    # rest over the probes and the results write of the cached path
    for fresh, share in ((True, 0.3), (True, 0.8), (False, 0.3), (False, 0.6), (False, 0.9)):
        for attempt in range(3):  # a run faster than the measured one ends before a late kill: try earlier
            if fresh:
                shutil.rmtree(run / "embeddings" / "cache", ignore_errors=True)
            proc = subprocess.Popen(evaluate(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(share * 0.75**attempt * (first if fresh else duration))
            if proc.poll() is None:
                break
        else:
            continue  # finished before the kill three times
        proc.kill()
        proc.wait()
        kills += 1
        for cache in (run / "embeddings" / "cache").glob("*.pt"):  # whatever is there is whole
            torch.load(cache, weights_only=True)
        for done in (run / "eval").rglob("results.json"):
            json.loads(done.read_text())
    assert kills >= EVAL_KILLS
    subprocess.run(evaluate(run), check=True, capture_output=True, timeout=300)
    assert json.loads((run / "eval" / "last" / "results.json").read_text())["rows"] == reference
    assert not list(run.rglob("*.tmp"))


@pytest.mark.parametrize("command", ["pretrain", "evaluate"])
def test_read_only_output_folder_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch, command):
    from typer.testing import CliRunner

    import probclr.io as pio
    from cli.main import app

    original = pio._atomic

    def stop_after_first_checkpoint(path, write):
        original(path, write)
        if path.name == "last.pt":
            raise KeyboardInterrupt  # as Ctrl-C right after the first checkpoint: a run to resume

    monkeypatch.setattr(pio, "_atomic", stop_after_first_checkpoint)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [*ARGS, "--epochs", "3", "--out", str(out)])
    assert res.exit_code == 130, res.output
    monkeypatch.setattr(pio, "_atomic", original)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    listing = sorted(p.relative_to(out) for p in out.rglob("*"))
    argv = ([*ARGS, "--epochs", "3", "--out", str(out), "--resume"] if command == "pretrain"
            else ["evaluate", "--run", str(out), "--fraction", "0.5", "--seeds", "1", "--probe", "knn"])
    with _ReadOnly(out, out / "checkpoints"):
        res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [x for x in res.output.replace("\r", "\n").splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and res.output.rstrip().endswith(errors[0]), res.output  # progress bars aside
    assert errors[0].startswith(f"error: cannot write '{out}"), errors[0]
    assert "unchanged" in errors[0] or "nothing was written" in errors[0], errors[0]
    assert (out / "checkpoints" / "last.pt").read_bytes() == before  # the previous checkpoint, intact
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == listing  # nothing new, no temporary files


@pytest.mark.slow
def test_stop_signal_is_honoured_when_every_epoch_is_one_step(tmp_path):
    """One step per epoch (128 images, batch 128): SIGINT stops at the end of the current step's epoch, and
    resume ends where an uninterrupted run ends."""
    one_step = ["--set", "data.train_limit=128", "--batch-size", "128", "--epochs", "60"]
    ref = tmp_path / "ref"
    subprocess.run([*_cmd(ref)[:-4], *one_step, "--out", str(ref)], check=True, capture_output=True, timeout=300)
    out = tmp_path / "run"
    proc = subprocess.Popen([*_cmd(out)[:-4], *one_step, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(out / "metrics.jsonl")
    time.sleep(0.3)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - sent < 10, err
    assert "continue with --resume" in err and "Traceback" not in err
    subprocess.run([*_cmd(out)[:-4], *one_step, "--out", str(out), "--resume"], check=True, capture_output=True,
                   timeout=300)
    model, metrics = _final(out)
    ref_model, ref_metrics = _final(ref)
    assert metrics == ref_metrics
    for k, v in ref_model.items():
        assert torch.equal(model[k], v), k


def test_resume_refuses_a_changed_setting_naming_both_values(tmp_path):
    from clihelp import bad

    out = tmp_path / "run"
    subprocess.run(_cmd(out, epochs=1), check=True, capture_output=True, timeout=300)
    lines = bad(["pretrain", "--out", str(out), "--resume", "--set", "optim.lr=0.5"],
                "differs in optim.lr (run: 0.3, now: 0.5)")
    assert len(lines) == 1


def test_ctrl_c_during_start_up_is_one_line():
    """SIGINT while the command line is still being imported (made slow here, deterministically)."""
    code = ("import sys, time\n"
            "class Slow:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'cli.main':\n"
            "            time.sleep(10)\n"
            "        return None\n"
            "sys.meta_path.insert(0, Slow())\n"
            "from cli.entry import main\n"
            "main()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "pretrain", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted while starting" in err and "Traceback" not in err, err


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from cli.entry import main
main()
"""


@pytest.mark.parametrize("stage", ["first checkpoint", "embed"])
def test_write_failure_in_torch_save_is_one_line_and_leaves_no_temporary_file(tmp_path, stage):
    """A real failed write (a file-size limit, as a full disk) in torch.save: one line, exit 2, no traceback,
    no temporary file; for the first checkpoint and for `embed` (a file larger than the checkpoint)."""
    out = tmp_path / "run"
    if stage == "first checkpoint":
        cmd = [sys.executable, "-c", _LIMITED, "20000", *ARGS, "--epochs", "2", "--out", str(out)]
    else:
        subprocess.run(_cmd(out, epochs=1), check=True, capture_output=True, timeout=300)
        limit = (out / "checkpoints" / "last.pt").stat().st_size + 4096
        cmd = [sys.executable, "-c", _LIMITED, str(limit), "embed", "--run", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip() and not line.startswith("pretrain: epoch")]
    assert len(lines) == 1 and "cannot write" in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp"))
