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
