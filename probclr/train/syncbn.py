"""Global batch normalisation across processes (SimCLR's "global BN", Chen et al. 2020, Sec. 3) on any device.

PyTorch's ``nn.SyncBatchNorm`` runs on CUDA only; with several CPU processes (gloo) the statistics of every
BN layer are here summed over ranks with a differentiable all-reduce, so each rank normalises with the mean
and variance of the global batch and its gradients are those of BN on the concatenated batch (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from probclr.distributed import dist_info


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the batches of all ranks in training; plain BatchNorm in eval or with one process."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.ndim < 2:
            raise ValueError(f"expected a (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or dist_info().world == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.ndim)]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([x.numel() // c])])
        total = all_reduce(local)  # (2C + 1,) sums over every rank, with gradients
        n = total[-1]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)  # biased, as BN normalises with
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))  # unbiased
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        shape = [1, c] + [1] * (x.ndim - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_to_global_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` with :class:`GlobalBatchNorm`, keeping its parameters and
    running statistics (state-dict keys are unchanged, so checkpoints load into the plain model)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_bn(child))
    return module
