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
from typing import Any

from contrastkit.errors import UserError, check_choice

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


def check_negative_sampling(values: dict[str, Any], where: str) -> None:
    """Raise a one-line UserError naming ``where.<field>`` for any out-of-range strategy value."""

    def number(name: str, lo: float | None = None, hi: float | None = None, *, hi_open: bool = False) -> float:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(f"{where}.{name} must be a finite number; got {value!r}")
        if lo is not None and value < lo:
            raise UserError(f"{where}.{name} must be >= {lo}; got {value!r}")
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise UserError(f"{where}.{name} must be {'<' if hi_open else '<='} {hi}; got {value!r}")
        return float(value)

    check_choice(f"{where}.kind", values["kind"], NEGATIVE_KINDS)
    check_choice(f"{where}.schedule", values["schedule"], SCHEDULES)
    k = values["k"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"{where}.k must be an integer >= 1; got {k!r}")
    number("threshold", -1e30, 1e30)
    number("margin", 0.0)
    number("beta", 0.0)
    number("tau_plus", 0.0, 1.0, hi_open=True)
    number("warmup_fraction", 0.0, 1.0, hi_open=True)
    number("strength", 0.0, 1.0)


@dataclass(frozen=True)
class NegativeSampling:
    """A negative strategy for :func:`contrastkit.losses.info_nce` (see the module docstring).

    Similarity thresholds (``threshold``, ``margin``) are in the units of the similarity (cosine
    in [-1, 1]), not divided by the temperature. ``warmup_fraction``: the strategy is off (uniform)
    for this first fraction of training, then the schedule ramps it up to ``strength`` at the end
    ("constant" switches it on at once).
    """

    kind: str = "uniform"
    k: int = 64
    threshold: float = 0.0
    margin: float = 0.1
    beta: float = 1.0
    tau_plus: float = 0.1
    schedule: str = "constant"
    warmup_fraction: float = 0.0
    strength: float = 1.0

    def __post_init__(self) -> None:
        check_negative_sampling(self.__dict__, "NegativeSampling")

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


def negative_sampling_from_config(cfg: Any, where: str = "method.negatives") -> NegativeSampling | None:
    """The strategy described by a ``NegativesConfig`` (None for plain uniform negatives).

    Values are checked with messages naming ``where.<field>`` (e.g. ``method.negatives.k``).
    """
    values = {
        name: getattr(cfg, name)
        for name in (
            "kind",
            "k",
            "threshold",
            "margin",
            "beta",
            "tau_plus",
            "schedule",
            "warmup_fraction",
            "strength",
        )
    }
    check_negative_sampling(values, where)
    if values["kind"] == "uniform":
        return None
    return NegativeSampling(**values)
