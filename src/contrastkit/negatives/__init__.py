"""Where negatives come from and how they are chosen, for your own loop:

- :class:`KeyQueue` (``queue.py``): MoCo's memory bank, a FIFO of past keys used as extra
  negatives; its contents are buffers, so they travel with ``state_dict()``.
- :class:`NegativeSampling` (``mining.py``): hard-negative mining and weighting, debiasing and
  decoupling inside the InfoNCE kernel, with an easy → hard schedule (``.at(progress)``).
- :func:`gather_with_grad` / :func:`gather_no_grad` (``distributed.py``): the rows of every
  process, in rank order — with gradients flowing back to the process that owns each row, or
  without (labels, momentum keys); :func:`rank_offset` is this process's first row in the
  gathered batch and :func:`world` its (rank, world size). Outside torch.distributed they are
  the identity. The losses' ``gather_distributed=True`` uses them.

Example (MoCo: a queue of past keys as negatives, the hardest 16 of them per query)::

    import torch
    from contrastkit.losses import info_nce
    from contrastkit.negatives import KeyQueue, NegativeSampling

    queue = KeyQueue(size=64, dim=16)
    hard = NegativeSampling(kind="hard_topk", k=16)
    for _ in range(3):
        q = torch.randn(8, 16, requires_grad=True)  # queries (online encoder)
        k = torch.randn(8, 16)  # their positive keys (momentum encoder, no gradient)
        extra = queue.keys() if len(queue) else None
        loss = info_nce(q, k, negative_keys=extra, temperature=0.2, negatives=hard)
        loss.backward()
        queue.enqueue(k)
    assert len(queue) == 24
"""

from contrastkit.negatives.distributed import gather_no_grad, gather_with_grad, rank_offset, world
from contrastkit.negatives.mining import (
    NEGATIVE_KINDS,
    SCHEDULES,
    NegativeSampling,
    negative_sampling_from_config,
)
from contrastkit.negatives.queue import KeyQueue

__all__ = [
    "NEGATIVE_KINDS",
    "SCHEDULES",
    "KeyQueue",
    "NegativeSampling",
    "gather_no_grad",
    "gather_with_grad",
    "negative_sampling_from_config",
    "rank_offset",
    "world",
]
