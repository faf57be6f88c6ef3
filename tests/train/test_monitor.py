"""The kNN monitor: validation accuracy per epoch in metrics.jsonl, no effect on the trained weights."""

import json

import torch

from probclr.config import load_config
from probclr.train.pretrain import pretrain


def _sets(cifar_slice, every):
    return ["data.dataset=cifar10", f"data.data_dir={cifar_slice}", "model.convnet_widths=[8, 16]",
            "optim.epochs=2", "optim.batch_size=100", "optim.warmup_epochs=0", "model.proj_dim=16",
            f"run.monitor_every={every}", "run.monitor_bank=200", "run.monitor_queries=40"]


def test_monitor_logs_val_accuracy_and_leaves_training_unchanged(tmp_path, cifar_slice):
    pretrain(load_config(None, _sets(cifar_slice, 1)), tmp_path / "on")
    pretrain(load_config(None, _sets(cifar_slice, 0)), tmp_path / "off")
    rows = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert [("knn_val_acc" in r) for r in rows] == [True, True]
    assert all(0.0 <= r["knn_val_acc"] <= 1.0 and r["monitor_s"] > 0 for r in rows)
    assert not any("knn_val_acc" in json.loads(line)
                   for line in (tmp_path / "off" / "metrics.jsonl").read_text().splitlines())
    on = torch.load(tmp_path / "on" / "checkpoints" / "last.pt", weights_only=True)["model"]
    off = torch.load(tmp_path / "off" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in on:
        assert torch.equal(on[k], off[k]), k


def test_monitor_default_is_off_for_digits_and_on_for_real_data(cifar_slice):
    from probclr.data.sources import load_splits
    from probclr.train.monitor import monitor_interval

    digits = load_config(None, [])
    assert monitor_interval(digits, load_splits(digits.data)) == 0
    real = load_config(None, [f"data.data_dir={cifar_slice}", "data.dataset=cifar10"])
    assert monitor_interval(real, load_splits(real.data)) == 1
    no_val = load_config(None, [f"data.data_dir={cifar_slice}", "data.dataset=cifar10", "data.val_size=0"])
    assert monitor_interval(no_val, load_splits(no_val.data)) == 0


def test_monitor_scores_a_perfect_encoder_perfectly():
    """An 'encoder' that writes the label into the image gives 100 % kNN accuracy; a constant one chance."""
    from probclr.data.splits import ImageSet, Splits
    from probclr.train.monitor import KNNMonitor

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=g)
    images = torch.zeros(400, 3, 8, 8, dtype=torch.uint8)
    images[torch.arange(400), 0, 0, labels] = 255  # the label as a one-hot pixel
    pool = ImageSet(images[:300], labels[:300], ("a", "b", "c", "d"))
    val = ImageSet(images[300:], labels[300:], pool.classes)
    mon = KNNMonitor(Splits(pool, pool, val, val), bank_size=100, queries=50)

    class OneHot(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x[:, 0, 0, :4] + 1e-3  # (B, 4)

    assert mon(OneHot())["knn_val_acc"] == 1.0


def test_progress_is_one_line_per_epoch_when_not_a_terminal_and_the_bar_closes():
    import io

    from cli.progress import ProgressBar
    from probclr.train.pretrain import Progress

    log = io.StringIO()  # not a tty
    with ProgressBar("pretrain", stream=log) as bar:
        for step in range(1, 7):
            bar.update(Progress((step - 1) // 3 + 1, step, 6, 1.0, 100.0, 0.1, step % 3 == 0))
    assert log.getvalue().count("\n") == 2 and "\r" not in log.getvalue()

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = ProgressBar("pretrain", stream=tty)
    for step in range(1, 7):
        bar.update(Progress(1, step, 6, 1.0, 100.0, 0.1, step == 6))
    assert bar.bar is None  # closed at the last step: later output does not re-print it
    size = len(tty.getvalue())
    bar.close()
    assert len(tty.getvalue()) == size
