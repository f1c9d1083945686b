"""A FIFO queue (memory bank) of past keys used as extra negatives (MoCo, He et al. 2020,
arXiv:1911.05722). Its contents are buffers, so checkpoints carry them and resume is exact."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit.errors import UserError


class KeyQueue(nn.Module):
    """Holds up to ``size`` keys of width ``dim`` (plus an optional integer label per key).

    ``keys()`` returns the filled part (fewer than ``size`` rows at the start of training, so
    no zero rows ever act as negatives); ``enqueue(k)`` writes the newest keys over the oldest.
    Register it as a submodule of your model (or move it with ``.to(device)``): its buffers
    follow the model's device and its ``state_dict``.

    Example::

        queue = KeyQueue(size=4096, dim=128)
        loss = info_nce(q, k, negative_keys=queue.keys() if len(queue) else None, temperature=0.2)
        queue.enqueue(k)  # after the step: this batch's keys become negatives of the next ones
    """

    queue: Tensor
    labels: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise UserError(f"queue size and dim must be >= 1; got size={size}, dim={dim}")
        self.size, self.dim = size, dim
        self.register_buffer("queue", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        # the same two counters on the host: a step never reads them from the device (the
        # buffers carry them into checkpoints; loading one reads them back once)
        self._ptr = self._filled = 0
        self.register_load_state_dict_post_hook(lambda module, keys: module._read_counters())

    def _read_counters(self) -> None:
        self._ptr, self._filled = int(self.ptr), int(self.filled)

    def __len__(self) -> int:
        return self._filled

    def keys(self) -> Tensor:
        """The stored keys, (filled, dim), oldest first is not guaranteed (ring buffer)."""
        return self.queue[: self._filled]

    def key_labels(self) -> Tensor:
        return self.labels[: self._filled]

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Insert ``keys`` (B, dim), detached, overwriting the oldest when full."""
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"KeyQueue expects keys (B, {self.dim}); got {tuple(keys.shape)}")
        keys = keys.detach().to(self.queue.dtype)
        b = keys.shape[0]
        if b >= self.size:  # keep only the newest `size`
            keys = keys[-self.size :]
            labels = labels[-self.size :] if labels is not None else None
            b = self.size
        ptr = self._ptr
        idx = (torch.arange(b, device=self.queue.device) + ptr) % self.size
        self.queue.index_copy_(0, idx, keys)
        lab = labels.to(self.labels) if labels is not None else torch.full_like(idx, -1)
        self.labels.index_copy_(0, idx, lab)
        self._ptr, self._filled = (ptr + b) % self.size, min(self._filled + b, self.size)
        self.ptr.fill_(self._ptr)
        self.filled.fill_(self._filled)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
