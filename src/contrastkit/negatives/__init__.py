"""Where negatives come from (queue.py: the MoCo memory bank) and how they are chosen and
weighted inside the InfoNCE kernel (mining.py: hard negatives, debiasing, schedules)."""

from contrastkit.negatives.mining import (
    NEGATIVE_KINDS,
    SCHEDULES,
    NegativeSampling,
    negative_sampling_from_config,
)

__all__ = ["NEGATIVE_KINDS", "SCHEDULES", "NegativeSampling", "negative_sampling_from_config"]
