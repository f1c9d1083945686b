"""Sentence embeddings from scored pairs (STS-style data: sentence1, sentence2, a similarity score):
CoSENT (Su 2022) and AnglE (Li & Li 2023, arXiv:2309.12871), the losses of
:mod:`contrastkit.losses.scored_pairs` on the two sentences' embeddings. The pairs' scores
train directly — no threshold turns them into positives and negatives (AnglE's in-batch term
aside, which takes the pairs scoring at least ``positive_score`` as positives).

A task reads a table's (sentence1, sentence2, score) columns for them (``text.train_columns``;
``sick:SPLIT`` gives sentence_A, sentence_B, relatedness_score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.losses import angle_loss, cosent_loss
from contrastkit.methods.registry import register_method, resolve_options
from contrastkit.methods.simcse import SentenceEmbeddingMethod, TextMethodOptions
from contrastkit.options import option


@dataclass
class ScoredPairOptions(TextMethodOptions):
    """Options of a method that trains on scored pairs (the task reads a score column for it)."""


@dataclass
class CoSENTOptions(ScoredPairOptions):
    """CoSENT's options."""

    scale: float = option(20.0, "scale of the cosine differences (1 / temperature; Su 2022: 20)", gt=0)


@dataclass
class AnglEOptions(ScoredPairOptions):
    """AnglE's options: the weights and scales of its three terms (the authors' defaults)."""

    cosine_weight: float = option(1.0, "weight of the CoSENT (cosine ranking) term", ge=0)
    ibn_weight: float = option(1.0, "weight of the in-batch-negative (InfoNCE) term", ge=0)
    angle_weight: float = option(1.0, "weight of the angle ranking term", ge=0)
    cosine_scale: float = option(20.0, "scale of the cosine term", gt=0)
    ibn_scale: float = option(20.0, "scale (1 / temperature) of the in-batch term", gt=0)
    angle_scale: float = option(1.0, "scale of the angle term", gt=0)
    positive_score: float = option(
        4.0, "in-batch term: pairs scoring at least this are each other's positives (SICK 1–5, STS-B 0–5; 0/1 labels: 1)"
    )

    def check_values(self, prefix: str) -> None:
        super().check_values(prefix)
        if not self.cosine_weight + self.ibn_weight + self.angle_weight > 0:
            raise UserError(f"{prefix}: at least one of cosine_weight, ibn_weight, angle_weight must be > 0")
        odd = [d for d in self.matryoshka_dims if d % 2]
        if odd and self.angle_weight:
            raise UserError(
                f"{prefix}.matryoshka_dims must be even for AnglE's angle term (real and imaginary halves); got {odd}"
            )


class _ScoredPairMethod(SentenceEmbeddingMethod):
    def pair_loss(self, views: list[Tensor], batch: dict[str, Any]) -> Tensor:
        if len(views) != 2 or "scores" not in batch:
            raise UserError(
                f"{type(self).__name__} trains on scored pairs: a batch of 2 views and their scores; "
                f"got {len(views)} view(s){'' if 'scores' in batch else ' and no scores'}"
            )
        return self.scored_loss(views[0], views[1], batch["scores"])

    def scored_loss(self, x: Tensor, y: Tensor, scores: Tensor) -> Tensor:
        raise NotImplementedError


@register_method("cosent", options=CoSENTOptions, tasks=("text",), paper="Su 2022, kexue.fm/archives/8847")
class CoSENT(_ScoredPairMethod):
    """CoSENT: pairs with a higher score get a higher cosine than pairs with a lower one.

    Batch: ``{"views": [ids1 (B, L1), ids2 (B, L2)], "masks": [mask1, mask2], "scores": (B,)}``
    — token ids and attention masks of sentence 1 and sentence 2 of B pairs (as
    :class:`~contrastkit.methods.SimCSE`'s views) and the pairs' similarity scores (float).
    Under torch.distributed the pairs of every process are ranked together (the global batch).
    """

    def __init__(
        self, encoder: nn.Module, options: CoSENTOptions | None = None, *, pad_token_id: int = 0, **overrides: Any
    ) -> None:
        opts = resolve_options(CoSENTOptions, options, overrides, "CoSENT")
        super().__init__(encoder, opts, pad_token_id, "CoSENT")
        self.scale = opts.scale

    def scored_loss(self, x: Tensor, y: Tensor, scores: Tensor) -> Tensor:
        return cosent_loss(x, y, scores, scale=self.scale, gather_distributed=True)


@register_method("angle", options=AnglEOptions, tasks=("text",), paper="Li & Li 2023, arXiv:2309.12871")
class AnglE(_ScoredPairMethod):
    """AnglE: CoSENT + in-batch negatives + the angle ranking term in complex space.

    Batch: ``{"views": [ids1 (B, L1), ids2 (B, L2)], "masks": [mask1, mask2], "scores": (B,)}``
    as :class:`CoSENT`'s; pairs scoring at least ``positive_score`` are positives of the
    in-batch term. The embedding width (and every Matryoshka size) must be even.
    """

    def __init__(
        self, encoder: nn.Module, options: AnglEOptions | None = None, *, pad_token_id: int = 0, **overrides: Any
    ) -> None:
        opts = resolve_options(AnglEOptions, options, overrides, "AnglE")
        super().__init__(encoder, opts, pad_token_id, "AnglE")
        self.angle_opts = opts

    def scored_loss(self, x: Tensor, y: Tensor, scores: Tensor) -> Tensor:
        o = self.angle_opts
        return angle_loss(
            x, y, scores, positive=scores >= o.positive_score,
            cosine_weight=o.cosine_weight, ibn_weight=o.ibn_weight, angle_weight=o.angle_weight,
            cosine_scale=o.cosine_scale, ibn_scale=o.ibn_scale, angle_scale=o.angle_scale, gather_distributed=True,
        )
