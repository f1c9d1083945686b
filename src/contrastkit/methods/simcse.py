"""SimCSE: contrastive sentence embeddings (Gao, Yao & Chen 2021, arXiv:2104.08821).

Unsupervised: each sentence is encoded twice with different dropout masks; the two encodings
are a positive pair, the other sentences of the batch are negatives (InfoNCE, temperature
0.05). Supervised: (anchor, positive) pairs with in-batch negatives and optional hard negatives
(the MultipleNegativesRanking loss of sentence-transformers, Henderson et al. 2017,
arXiv:1705.00652). Both go through the one InfoNCE kernel; GradCache (Gao et al. 2021,
arXiv:2101.06983) makes large batches fit in fixed memory.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.losses import info_nce
from contrastkit.methods.base import StepOutput, embedding_stats
from contrastkit.methods.gradcache import Tower, gradcache_loss, split_rows
from contrastkit.negatives.distributed import gather_with_grad, rank_offset, world


def pad_and_stack(ids: list[Tensor], masks: list[Tensor], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Concatenate token batches of different padded lengths into one (sum B, max L) batch."""
    length = max(int(t.shape[1]) for t in ids)
    out_ids = [F.pad(t, (0, length - t.shape[1]), value=pad_id) for t in ids]
    out_mask = [F.pad(m, (0, length - m.shape[1]), value=0) for m in masks]
    return torch.cat(out_ids), torch.cat(out_mask)


class SimCSE(nn.Module):
    """Sentence encoder trained with InfoNCE over views of the same sentence or (anchor, positive
    [, hard negative]) tuples; ``forward(input_ids, attention_mask)`` is the sentence embedding.

    A batch is ``{"views": [ids (B, L_v), ...], "masks": [mask (B, L_v), ...]}``: two identical
    views for unsupervised SimCSE (dropout makes them differ), or anchor, positive and optionally
    a hard negative. Anchors are the queries; positives are the keys (query i's positive is key
    i); hard negatives are extra keys for every query.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        temperature: float = 0.05,
        similarity: str = "cosine",
        gradcache_chunk: int | None = None,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise UserError(f"SimCSE temperature must be > 0, got {temperature}")
        self.encoder = encoder
        self.temperature = float(temperature)
        self.similarity = similarity
        self.gradcache_chunk = gradcache_chunk
        self.pad_token_id = int(pad_token_id)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out: Tensor = self.encoder(input_ids, attention_mask)
        return out

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
            )
        return info_nce(
            views[0],
            views[1],
            negative_keys=views[2] if len(views) == 3 else None,
            temperature=self.temperature,
            similarity=self.similarity,
        )

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        ids: list[Tensor] = batch["views"]
        masks: list[Tensor] = batch["masks"]
        b = int(ids[0].shape[0])
        all_ids, all_mask = pad_and_stack(ids, masks, self.pad_token_id)
        if self.gradcache_chunk:
            tower = Tower(self.encoder, split_rows(self.gradcache_chunk, all_ids, all_mask), self.encoder)
            params = [p for p in self.parameters() if p.requires_grad]
            loss, reps = gradcache_loss(
                [tower], lambda r: self.loss_from_views(list(r[0].split(b))), params
            )
            z = reps[0]
        else:
            z = self.encoder(all_ids, all_mask)
            loss = self.loss_from_views(list(z.split(b)))
        logs = {"loss": float(loss.detach())}
        first = z[:b].detach()
        logs.update(embedding_stats(first))
        with torch.no_grad():
            logs["pos_cos"] = float(F.cosine_similarity(first.float(), z[b : 2 * b].detach().float()).mean())
        return StepOutput(loss=loss, logs=logs)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """SimCSE has no momentum encoder or schedule of its own."""
