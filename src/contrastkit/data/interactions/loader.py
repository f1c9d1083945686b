"""BPR training triples (user, positive item, sampled negative item) for the generic Trainer.

Each epoch is a seeded permutation of the training interactions with one uniformly sampled
negative per row (an item the user has not interacted with in training). Everything is derived
from (seed, epoch), so a resumed run sees exactly the batches of the uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.errors import UserError


class BPRLoader:
    """Yields {'users', 'pos', 'neg': (B,) long tensors, 'epoch': int} on `device`."""

    def __init__(
        self,
        train: np.ndarray,
        n_items: int,
        *,
        batch_size: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if train.shape[0] == 0:
            raise UserError("no training interactions: nothing to learn from")
        self.device = torch.device(device)
        self.users = torch.as_tensor(train[:, 0], dtype=torch.long)
        self.items = torch.as_tensor(train[:, 1], dtype=torch.long)
        self.n_items = int(n_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._seen = torch.unique(self.users * self.n_items + self.items)  # sorted keys
        counts = torch.bincount(self.users)
        if bool((counts >= self.n_items).any()):
            full = int(torch.nonzero(counts >= self.n_items)[0, 0])
            raise UserError(f"user index {full} interacted with every item: no negatives to sample")

    def __len__(self) -> int:
        """Batches per epoch (the last one may be smaller)."""
        return math.ceil(self.users.shape[0] / self.batch_size)

    def _is_seen(self, users: Tensor, items: Tensor) -> Tensor:
        keys = users * self.n_items + items
        slot = torch.searchsorted(self._seen, keys).clamp_max(self._seen.numel() - 1)
        return self._seen[slot] == keys

    def sample_negatives(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """One uniformly drawn unseen item per user (rejection sampling, vectorised)."""
        neg = torch.randint(self.n_items, users.shape, generator=generator)
        bad = self._is_seen(users, neg)
        while bool(bad.any()):
            idx = torch.nonzero(bad).squeeze(1)
            neg[idx] = torch.randint(self.n_items, (idx.numel(),), generator=generator)
            bad[idx] = self._is_seen(users[idx], neg[idx])
        return neg

    def epoch_triples(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.users.shape[0], generator=gen)
        users, pos = self.users[perm], self.items[perm]
        return users, pos, self.sample_negatives(users, gen)

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        users, pos, neg = (t.to(self.device) for t in self.epoch_triples(epoch))
        for b in range(start, len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield {"users": users[sl], "pos": pos[sl], "neg": neg[sl], "epoch": epoch}

    def units(self, batch: dict[str, Any]) -> int:
        """Interactions (training rows) in a batch."""
        return int(batch["users"].shape[0])

    def state_dict(self) -> dict[str, Any]:
        """Batches depend only on (seed, epoch): the seed is the whole state."""
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
