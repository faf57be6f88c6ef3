"""One writer per run directory; readers see one consistent checkpoint."""

import os
import subprocess
import sys
import time

from clihelp import bad

from probclr.run.runlock import RunLock, stable_checkpoint


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli.main", "pretrain", "--epochs", "200", "--batch-size", "64", "--set",
           "model.convnet_widths=[8, 16]", "--set", "run.num_threads=1", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "metrics.jsonl").exists():
            time.sleep(0.05)
        config_before = (out / "config.yaml").read_bytes()
        lines = bad(["pretrain", "--epochs", "1", "--out", str(out)], f"is in use by probclr pid {proc.pid}")
        assert len(lines) == 1
        lines = bad(["pretrain", "--epochs", "1", "--resume", "--out", str(out)], "is in use by")
        assert (out / "config.yaml").read_bytes() == config_before  # the loser wrote nothing
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 143  # the holder stopped cleanly when asked, its checkpoint intact


def test_lock_is_released_and_a_failed_start_leaves_no_directory(tmp_path):
    with RunLock(tmp_path / "a"):
        assert (tmp_path / "a" / ".lock").is_file()
    assert not (tmp_path / "a").exists()  # created for nothing: removed again
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with RunLock(tmp_path / "b"):
        pass
    with RunLock(tmp_path / "b"):  # released: the next writer gets it
        pass
    assert (tmp_path / "b" / "keep.txt").exists()


def test_stable_checkpoint_survives_an_atomic_replace(tmp_path):
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"epoch 27")
    with stable_checkpoint(ckpt) as stable:
        tmp = tmp_path / "next.tmp"
        tmp.write_bytes(b"epoch 28")
        os.replace(tmp, ckpt)  # what the writer does
        assert stable.read_bytes() == b"epoch 27" and ckpt.read_bytes() == b"epoch 28"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the link is gone


def test_leftovers_of_killed_processes_are_removed_and_live_ones_kept(tmp_path):
    """A SIGKILLed `analyze` leaves its staging folder, a killed reader its hard link; the next call removes
    those of dead processes on this host, never a live process's or another host's."""
    import socket
    import subprocess
    import sys

    from probclr.io import staged_dir
    from probclr.run.runlock import stable_checkpoint

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".analysis.tmp-{host}-{dead.pid}").mkdir()
        (tmp_path / f".analysis.old-{host}-{dead.pid}").mkdir()
        (tmp_path / f".analysis.tmp-{host}-{live.pid}").mkdir()
        (tmp_path / f".analysis.tmp-otherhost-{dead.pid}").mkdir()
        with staged_dir(tmp_path / "analysis") as out:
            (out / "x").write_text("1")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(["analysis", f".analysis.tmp-{host}-{live.pid}", f".analysis.tmp-otherhost-{dead.pid}"])
        ckpt = tmp_path / "last.pt"
        ckpt.write_bytes(b"weights")
        (tmp_path / f".read-{host}-{dead.pid}-abcd1234.pt").write_bytes(b"weights")
        with stable_checkpoint(ckpt) as path:
            assert path.read_bytes() == b"weights"
        assert not list(tmp_path.glob(".read-*"))
    finally:
        live.kill()
        live.wait()
