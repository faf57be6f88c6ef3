"""A kNN monitor during pretraining: top-1 accuracy on (part of) the validation split, never the test set.

Every ``run.monitor_every`` epochs the encoder, in eval mode and without gradients, embeds a stratified
bank of labeled label-pool images and a seeded subset of the validation images; each validation image takes
the weighted vote of its 20 nearest bank images (Wu et al. 2018, T = 0.07). It changes no training state:
no random generator is drawn from and batch-norm statistics are not updated (eval mode), so a monitored
run's weights equal an unmonitored one's. Bank and query sizes bound its cost (BENCHMARKS: share of an epoch).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from probclr.config import Config
from probclr.data.fractions import label_subset
from probclr.data.splits import Splits
from probclr.model.forward import embed
from probclr.probes.knn import KNNProbe

MONITOR_K, MONITOR_T = 20, 0.07


def monitor_interval(cfg: Config, splits: Splits) -> int:
    """Epochs between monitor evaluations: the configured value, or (None) every epoch on real datasets and
    never on the demo's digits; 0 when there is no labeled validation split to monitor on."""
    if splits.val is None or splits.val.images.shape[0] == 0:
        return 0
    if cfg.run.monitor_every is not None:
        return cfg.run.monitor_every
    return 0 if cfg.data.dataset == "digits" else 1


class KNNMonitor:
    """kNN top-1 on validation images against a labeled bank, both fixed for the whole run."""

    def __init__(self, splits: Splits, bank_size: int, queries: int) -> None:
        assert splits.val is not None
        pool = splits.train
        share = min(1.0, bank_size / max(1, pool.labels.numel()))
        bank_idx = label_subset(pool.labels, share, seed=0)  # (M,) stratified
        q = torch.randperm(splits.val.labels.numel(), generator=torch.Generator().manual_seed(0))[:queries]
        self.bank_images, self.bank_labels = pool.images[bank_idx], pool.labels[bank_idx]
        self.query_images, self.query_labels = splits.val.images[q], splits.val.labels[q]
        self.num_classes = len(pool.classes)

    @torch.no_grad()
    def __call__(self, encoder: nn.Module) -> dict[str, float]:
        """{"knn_val_acc", "monitor_s"}; the encoder is left in the mode it was in."""
        t0 = time.perf_counter()
        was_training = encoder.training
        encoder.eval()
        bank = nn.functional.normalize(embed(encoder, self.bank_images), dim=1)  # (M, D)
        queries = embed(encoder, self.query_images)  # (Q, D)
        encoder.train(was_training)
        k = min(MONITOR_K, bank.shape[0])
        probs: Tensor = KNNProbe(bank, self.bank_labels, self.num_classes, k, MONITOR_T, 0.0, "monitor").probs(queries)
        acc = float((probs.argmax(dim=1) == self.query_labels).double().mean())
        return {"knn_val_acc": acc, "monitor_s": time.perf_counter() - t0}
