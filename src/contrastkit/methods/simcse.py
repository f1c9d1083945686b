"""SimCSE: contrastive sentence embeddings (Gao, Yao & Chen 2021, arXiv:2104.08821).

Unsupervised: each sentence is encoded twice with different dropout masks; the two encodings
are a positive pair, the other sentences of the batch are negatives (InfoNCE, temperature
0.05). Supervised: (anchor, positive) pairs with in-batch negatives and optional hard negatives
(the MultipleNegativesRanking loss of sentence-transformers, Henderson et al. 2017,
arXiv:1705.00652). Both go through the one InfoNCE kernel; GradCache (Gao et al. 2021,
arXiv:2101.06983) makes large batches fit in fixed memory; Matryoshka training (Kusupati et al.
2022, arXiv:2205.13147, ``method.matryoshka_dims``) applies the loss to nested prefixes of the
embeddings as well. :class:`SentenceEmbeddingMethod` is what these and the scored-pair methods
(``methods/scored_pairs.py``) share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.losses import check_matryoshka, info_nce, matryoshka_loss
from contrastkit.methods.base import StepOutput, embedding_stats
from contrastkit.methods.gradcache import Tower, gradcache_loss, split_rows
from contrastkit.methods.registry import MethodOptions, register_method, resolve_options
from contrastkit.negatives.distributed import gather_with_grad, rank_offset, world
from contrastkit.options import option
from contrastkit.similarity import SIMILARITIES


def pad_and_stack(ids: list[Tensor], masks: list[Tensor], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Concatenate token batches of different padded lengths into one (sum B, max L) batch."""
    length = max(int(t.shape[1]) for t in ids)
    out_ids = [F.pad(t, (0, length - t.shape[1]), value=pad_id) for t in ids]
    out_mask = [F.pad(m, (0, length - m.shape[1]), value=0) for m in masks]
    return torch.cat(out_ids), torch.cat(out_mask)


@dataclass
class TextMethodOptions(MethodOptions):
    """What every sentence-embedding method has: GradCache and Matryoshka training."""

    gradcache_chunk: int | None = option(
        None, "GradCache: encode this many rows at a time (large batches in fixed memory)", ge=1
    )
    matryoshka_dims: list[int] = option(
        help="Matryoshka (Kusupati et al. 2022): the loss also on the first d coordinates of the embeddings "
        "for each d, summed, e.g. [384, 256, 128, 64] (include the full width to keep it); none: full width only",
        factory=list,
        ge=1,
    )
    matryoshka_weights: list[float] = option(help="Matryoshka: one weight per dim (none: all 1)", factory=list, ge=0)

    def check_values(self, prefix: str) -> None:
        if self.matryoshka_weights and not self.matryoshka_dims:
            raise UserError(f"{prefix}.matryoshka_weights needs {prefix}.matryoshka_dims")
        if self.matryoshka_dims:
            try:
                check_matryoshka(self.matryoshka_dims, self.matryoshka_weights)
            except UserError as e:
                raise UserError(f"{prefix}.matryoshka_dims / matryoshka_weights: {e}") from None


@dataclass
class SimCSEOptions(TextMethodOptions):
    """SimCSE's options (unsupervised and supervised)."""

    temperature: float = option(0.05, "InfoNCE temperature τ", gt=0)
    similarity: str = option("cosine", "similarity of sentence embeddings", choices=SIMILARITIES)


class SentenceEmbeddingMethod(nn.Module):
    """What the sentence-embedding methods share: ``forward(input_ids, attention_mask)`` is the
    sentence embedding; ``training_step`` encodes every view in one encoder call (or with
    GradCache in chunks; on the CPU, views of different padded lengths one call each) and
    applies the method's :meth:`pair_loss` to the views' embeddings — with
    ``matryoshka_dims``, to their first d coordinates for each d, summed with the weights
    (:func:`~contrastkit.losses.matryoshka_loss`; the losses' cosine re-normalises the cut
    embeddings)."""

    opts: TextMethodOptions

    def __init__(self, encoder: nn.Module, opts: TextMethodOptions, pad_token_id: int, owner: str) -> None:
        super().__init__()
        self.opts = opts
        self.encoder = encoder
        self.gradcache_chunk = opts.gradcache_chunk
        self.pad_token_id = int(pad_token_id)
        width = getattr(encoder, "out_dim", None)
        if opts.matryoshka_dims and width is not None and max(opts.matryoshka_dims) > int(width):
            raise UserError(
                f"method.matryoshka_dims {opts.matryoshka_dims} exceed the {owner} encoder's embedding width {int(width)}"
            )

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out: Tensor = self.encoder(input_ids, attention_mask)
        return out

    def pair_loss(self, views: list[Tensor], batch: dict[str, Any]) -> Tensor:
        """The method's loss of the views' embeddings (each (B, D)) at full width."""
        raise NotImplementedError

    def views_loss(self, views: list[Tensor], batch: dict[str, Any], parts: dict[int, Tensor] | None = None) -> Tensor:
        """:meth:`pair_loss`, over the Matryoshka sizes when the method has them (each size's
        loss into ``parts``)."""
        dims = self.opts.matryoshka_dims
        if not dims:
            return self.pair_loss(views, batch)
        return matryoshka_loss(
            lambda *cut: self.pair_loss(list(cut), batch), views, dims, self.opts.matryoshka_weights, parts=parts
        )

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        ids: list[Tensor] = batch["views"]
        masks: list[Tensor] = batch["masks"]
        b = int(ids[0].shape[0])
        parts: dict[int, Tensor] = {}
        if self.gradcache_chunk:
            all_ids, all_mask = pad_and_stack(ids, masks, self.pad_token_id)
            tower = Tower(self.encoder, split_rows(self.gradcache_chunk, all_ids, all_mask), self.encoder)
            params = [p for p in self.parameters() if p.requires_grad]
            loss, reps = gradcache_loss(
                [tower], lambda r: self.views_loss(list(r[0].split(b)), batch, parts), params
            )
            z = reps[0]
        elif ids[0].device.type == "cpu" and len({int(t.shape[1]) for t in ids}) > 1:
            # on the CPU a step costs per token: each view at its own padded length (one call per
            # view) rather than all at the longest view's (6-12 % fewer tokens on SICK's pairs)
            z = torch.cat([self.encoder(i, m) for i, m in zip(ids, masks, strict=True)])
            loss = self.views_loss(list(z.split(b)), batch, parts)
        else:
            z = self.encoder(*pad_and_stack(ids, masks, self.pad_token_id))
            loss = self.views_loss(list(z.split(b)), batch, parts)
        first, second = z[:b].detach(), z[b : 2 * b].detach()

        def diagnostics() -> dict[str, float]:  # on logged steps only
            stats = embedding_stats(first)
            stats["pos_cos"] = float(F.cosine_similarity(first.float(), second.float()).mean())
            return stats

        logs = {"loss": loss.detach(), **{f"loss_dim{d}": part.detach() for d, part in parts.items()}}
        return StepOutput(loss=loss, logs=logs, diagnostics=diagnostics)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """No momentum encoder or schedule of its own."""


@register_method(
    "simcse", options=SimCSEOptions, tasks=("text",), paper="Gao, Yao & Chen 2021, arXiv:2104.08821"
)
class SimCSE(SentenceEmbeddingMethod):
    """SimCSE: sentences (or (anchor, positive[, hard negative]) tuples) contrasted in-batch.

    ``forward(input_ids, attention_mask)`` is the sentence embedding. A batch is
    ``{"views": [ids (B, L_v), ...], "masks": [mask (B, L_v), ...]}``: two identical views for
    unsupervised SimCSE (dropout makes them differ), or anchor, positive and optionally a hard
    negative. Anchors are the queries; positives are the keys (query i's positive is key i);
    hard negatives are extra keys for every query.

    Batch types: ``ids`` are integer (long) token ids and ``mask`` the tokenizer's attention
    mask (1 = token, 0 = padding), each view padded to its own length L_v, on the model's
    device — e.g. ``tok(sentences, padding=True, return_tensors="pt")``'s ``input_ids`` and
    ``attention_mask`` of a Hugging Face tokenizer. ``encoder(input_ids, attention_mask)`` must
    return (B, D) sentence embeddings. Other keys (``"index"``) are ignored.
    """

    def __init__(
        self,
        encoder: nn.Module,
        options: SimCSEOptions | None = None,
        *,
        pad_token_id: int = 0,
        **overrides: Any,
    ) -> None:
        opts = resolve_options(SimCSEOptions, options, overrides, "SimCSE")
        super().__init__(encoder, opts, pad_token_id, "SimCSE")
        self.opts: SimCSEOptions = opts
        self.temperature = opts.temperature
        self.similarity = opts.similarity

    def loss_from_views(self, views: list[Tensor]) -> Tensor:
        """InfoNCE of anchors (views[0]) against positives (views[1]) and hard negatives (views[2]);
        under torch.distributed against the positives and negatives of the global batch."""
        if len(views) not in (2, 3):
            raise UserError(f"SimCSE needs 2 views (anchor, positive) or 3 (+ hard negative); got {len(views)}")
        _, size = world()
        if size > 1:
            b = views[0].shape[0]
            index = torch.arange(b, device=views[0].device) + rank_offset(b)
            return info_nce(
                views[0],
                gather_with_grad(views[1]),
                positive_index=index,
                negative_keys=gather_with_grad(views[2]) if len(views) == 3 else None,
                temperature=self.temperature,
                similarity=self.similarity,
                check_values=False,
            )
        return info_nce(
            views[0],
            views[1],
            negative_keys=views[2] if len(views) == 3 else None,
            temperature=self.temperature,
            similarity=self.similarity,
            check_values=False,
        )

    def pair_loss(self, views: list[Tensor], batch: dict[str, Any]) -> Tensor:
        return self.loss_from_views(views)


register_method(
    "simcse_supervised", options=SimCSEOptions, tasks=("text",),
    paper="Gao, Yao & Chen 2021, arXiv:2104.08821; Henderson et al. 2017, arXiv:1705.00652",
    summary="Supervised SimCSE: (anchor, positive[, hard negative]) rows of a table, in-batch negatives.",
)(SimCSE)
