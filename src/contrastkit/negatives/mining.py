"""How negatives are chosen and weighted inside the one InfoNCE kernel: a small, frozen strategy.

Every strategy is a per-negative weight, a selection mask or a change of the denominator of
:func:`contrastkit.losses.info_nce` (pass ``negatives=NegativeSampling(...)``):

- ``uniform``: every negative counts once (in-batch / queue negatives, the default).
- ``hard_topk``: only the ``k`` most similar negatives of each anchor stay in the denominator.
- ``threshold``: only negatives whose similarity is >= ``threshold`` stay.
- ``margin``: only negatives whose similarity is >= (mean positive similarity − ``margin``) stay.
- ``hard_weighting``: negatives re-weighted by exp(β·s/t) (importance weights with mean 1), with
  the debiasing of τ⁺ on top (Robinson et al. 2021, arXiv:2010.04592; τ⁺ = 0: weighting only).
- ``debiased``: debiased contrastive loss with class prior τ⁺ and the N·e^{−1/t} floor
  (Chuang et al. 2020, arXiv:2007.00224).
- ``decoupled``: the positive is removed from the denominator (Yeh et al. 2022, arXiv:2110.06848).

``strength`` in [0, 1] interpolates from the uniform loss (0) to the full strategy (1): β and τ⁺
are multiplied by it, negatives left out by a selection keep weight 1 − strength, and the
decoupled positive keeps weight 1 − strength in the denominator. ``schedule`` makes the strength
follow training progress (easy → hard, an adaptive curriculum); ``.at(progress)`` resolves it.

Details: selections never carry a gradient; ``hard_topk`` keeps every negative whose similarity
is >= the k-th largest (exact ties at the boundary all stay); the debiasing floor N·e^{−1/t}
assumes cosine similarity, as in the paper; with several positives (SupCon) the positive mass
of the debiasing is their mean exp-logit and all positives stay in the denominator (one
positive: exactly the published losses). In the kernel these strategies take its dense path,
chunked over query rows (memory O(chunk x keys)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from contrastkit.options import check, option

NEGATIVE_KINDS: tuple[str, ...] = (
    "uniform",
    "hard_topk",
    "threshold",
    "margin",
    "hard_weighting",
    "debiased",
    "decoupled",
)
SELECTION_KINDS: tuple[str, ...] = ("hard_topk", "threshold", "margin")
SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class NegativeSampling:
    """A negative strategy for :func:`contrastkit.losses.info_nce` (see the module docstring).

    Similarity thresholds (``threshold``, ``margin``) are in the units of the similarity (cosine
    in [-1, 1]), not divided by the temperature. ``warmup_fraction``: the strategy is off (uniform)
    for this first fraction of training, then the schedule ramps it up to ``strength`` at the end
    ("constant" switches it on at once).

    Example::

        hard = NegativeSampling(kind="hard_topk", k=32, schedule="linear", warmup_fraction=0.1)
        loss = info_nce(q, k, temperature=0.2, negatives=hard.at(step / total_steps))
    """

    kind: str = option("uniform", "which negatives count and how much", choices=NEGATIVE_KINDS)
    k: int = option(64, "hard_topk: negatives kept per anchor", ge=1)
    threshold: float = option(0.0, "threshold: keep negatives with similarity >= this")
    margin: float = option(0.1, "margin: keep negatives within this of the positives", ge=0)
    beta: float = option(1.0, "hard_weighting: concentration β of exp(β·s/t)", ge=0)
    tau_plus: float = option(0.1, "debiased / hard_weighting: class prior τ⁺", ge=0, lt=1)
    schedule: str = option("constant", "strength over training (easy → hard)", choices=SCHEDULES)
    warmup_fraction: float = option(0.0, "uniform for this first fraction of training", ge=0, lt=1)
    strength: float = option(1.0, "0 = uniform … 1 = the full strategy", ge=0, le=1)

    def __post_init__(self) -> None:
        check(self, "NegativeSampling")

    @property
    def is_uniform(self) -> bool:
        """True when the strategy is plain InfoNCE (uniform, or switched off by strength 0)."""
        if self.kind == "uniform" or self.strength == 0.0:
            return True
        if self.kind == "hard_weighting":
            return self.beta == 0.0 and self.tau_plus == 0.0
        return self.kind == "debiased" and self.tau_plus == 0.0

    def hardness(self, progress: float) -> float:
        """Schedule factor in [0, 1] at training progress in [0, 1] (0 = uniform, 1 = full)."""
        p = min(1.0, max(0.0, float(progress)))
        if p < self.warmup_fraction:
            return 0.0
        if self.schedule == "constant":
            return 1.0
        x = (p - self.warmup_fraction) / (1.0 - self.warmup_fraction)
        if self.schedule == "linear":
            return x
        return 0.5 * (1.0 - math.cos(math.pi * x))

    def at(self, progress: float) -> NegativeSampling:
        """The strategy at training progress in [0, 1], with the schedule resolved into strength."""
        return replace(
            self,
            strength=self.strength * self.hardness(progress),
            schedule="constant",
            warmup_fraction=0.0,
        )

    @property
    def resolved(self) -> bool:
        """True when no schedule is left to resolve (what the kernel accepts)."""
        return self.schedule == "constant" and self.warmup_fraction == 0.0


def negative_sampling_from_config(cfg: NegativeSampling) -> NegativeSampling | None:
    """The strategy of a config's ``negatives`` section, or None for plain uniform negatives."""
    return None if cfg.kind == "uniform" else cfg
