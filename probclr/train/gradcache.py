"""Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"): the exact gradient of a contrastive loss over a batch too large to back-propagate at once.

Plain gradient accumulation is wrong for NT-Xent: each micro-batch's softmax would only see the negatives
of its own micro-batch, so accumulating K micro-batches of B optimises a loss with B - 1 negatives, not
K*B - 1. Gradient caching keeps the loss over the whole batch:
1. embed all views chunk by chunk without an autograd graph (memory: one chunk of activations);
2. compute the loss on the full set of embeddings and its gradient with respect to the embeddings only;
3. re-embed each chunk with a graph and back-propagate that chunk's slice of the cached gradient.
By the chain rule the parameter gradient is exactly that of the full-batch loss, given the same forward
function. Batch-norm statistics are per chunk (like per-device BN in multi-GPU SimCLR), so the gradient is
exactly that of the full-batch loss *of the model with per-chunk batch-norm statistics* -- not that of one
forward pass over the whole batch, whose statistics would be the batch's; running statistics are updated once
per chunk, as if each chunk were a forward pass of its own. A last chunk of one view joins the chunk before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from probclr.model.heads import HeadOutput

Output = HeadOutput


def _cat(outs: list[Output]) -> Output:
    kappas = [o.kappa for o in outs if o.kappa is not None]
    return HeadOutput(torch.cat([o.proj for o in outs]), torch.cat(kappas) if kappas else None)


def _leaf(out: Output) -> Output:
    kappa = None if out.kappa is None else out.kappa.detach().requires_grad_()
    return HeadOutput(out.proj.detach().requires_grad_(), kappa)


def _tensors(out: Output) -> list[Tensor]:
    return [out.proj] if out.kappa is None else [out.proj, out.kappa]


def chunks(views: Tensor, chunk: int) -> list[Tensor]:
    """``views`` split into chunks of ``chunk`` views, a last chunk of one view merged into the one before it:
    batch norm needs two values per channel in every chunk (so a batch of 16 views in chunks of 3 runs as
    3, 3, 3, 3, 4)."""
    parts = list(views.split(chunk))
    if len(parts) > 1 and parts[-1].shape[0] == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def grad_cached_backward(
    model: nn.Module, forward: Callable[[Tensor], Output], views: Tensor,
    loss_fn: Callable[[Output], tuple[Tensor, Tensor | None]], chunk: int,
) -> tuple[Tensor, Tensor | None]:
    """Back-propagate ``loss_fn(forward(views))`` into ``model``'s .grad, ``chunk`` views at a time.

    ``forward`` maps a chunk of views to the head output (a HeadOutput). Returns the loss
    (detached) and the loss function's auxiliary output (e.g. the kappas).
    """
    if chunk < 2:
        raise ValueError(f"grad-cache chunk must be >= 2 views (batch norm needs two per chunk), got {chunk}")
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    with torch.no_grad():
        outs = [forward(c) for c in chunks(views, chunk)]
    with torch.no_grad():  # the graph-free pass must not move BN running statistics
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    full = _leaf(_cat(outs))
    loss, aux = loss_fn(full)
    grads = torch.autograd.grad(loss, _tensors(full))
    start = 0
    for c in chunks(views, chunk):
        out = forward(c)
        parts = _tensors(out)
        n = c.shape[0]
        torch.autograd.backward(parts, [g[start:start + n].to(p.dtype) for g, p in zip(grads, parts, strict=True)])
        start += n
    return loss.detach(), aux
