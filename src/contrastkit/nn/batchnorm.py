"""BatchNorm computed over groups of the batch (split BN), to simulate per-device statistics.

MoCo (He et al. 2020, arXiv:1911.05722, Sec. 3.3) found that BatchNorm over the whole batch
lets the model "cheat" the pretext task through intra-batch statistics; on many GPUs the key
batch is shuffled across devices (ShuffleBN). On one device the same effect is obtained by
normalising G groups separately and shuffling the key batch across the groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics come from ``num_splits`` equal groups of rows.

    Running statistics are the mean over the groups' statistics; evaluation is plain BatchNorm.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        self.num_splits = num_splits

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = self.num_splits
        if not self.training or g == 1:
            return super().forward(x)
        if n % g:
            raise ValueError(f"SplitBatchNorm2d: batch {n} is not divisible by {g} splits")
        # (N, C, H, W) -> (N/G, G*C, H, W): each group's channels become separate channels
        xg = x.reshape(g, n // g, c, h, w).transpose(0, 1).reshape(n // g, g * c, h, w)
        running_mean = self.running_mean.repeat(g) if self.running_mean is not None else None
        running_var = self.running_var.repeat(g) if self.running_var is not None else None
        weight = self.weight.repeat(g) if self.weight is not None else None
        bias = self.bias.repeat(g) if self.bias is not None else None
        momentum = self.momentum if self.momentum is not None else 0.1
        out = F.batch_norm(
            xg, running_mean, running_var, weight, bias, True, momentum, self.eps
        )
        if running_mean is not None and self.running_mean is not None:
            self.running_mean.copy_(running_mean.view(g, c).mean(0))
        if running_var is not None and self.running_var is not None:
            self.running_var.copy_(running_var.view(g, c).mean(0))
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        return out.reshape(n // g, g, c, h, w).transpose(0, 1).reshape(n, c, h, w)


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a SplitBatchNorm2d with the same state."""
    if num_splits == 1:
        return module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SplitBatchNorm2d):
        new = SplitBatchNorm2d(
            module.num_features,
            num_splits,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        return new.to(next(module.buffers(), torch.empty(0)).device)
    for name, child in module.named_children():
        setattr(module, name, convert_split_batchnorm(child, num_splits))
    return module
