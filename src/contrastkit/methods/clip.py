"""Two-tower image–text training: CLIP (Radford et al. 2021, arXiv:2103.00020) and SigLIP
(Zhai et al. 2023, arXiv:2303.15343).

CLIP: symmetric InfoNCE (image→text and text→image) through the one InfoNCE kernel, with a
learnable logit scale exp(s), s initialised at log(1/0.07) and clamped at log(100). SigLIP:
the pairwise sigmoid loss of :mod:`contrastkit.losses.siglip` with learnable scale and bias.
Both towers end in a linear projection to a shared embedding space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.losses import info_nce
from contrastkit.losses.siglip import SigLIPLoss
from contrastkit.methods.base import StepOutput
from contrastkit.methods.gradcache import Tower, gradcache_loss, split_rows
from contrastkit.methods.registry import MethodOptions, register_method, resolve_options
from contrastkit.negatives.distributed import gather_no_grad, gather_with_grad, rank_offset, world
from contrastkit.options import option


def clip_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor,
    *,
    max_logit_scale: float = 100.0,
    labels: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE of matching rows (Radford et al. 2021): the mean of the image→text and
    text→image cross-entropies of ``exp(logit_scale) * cos(image_i, text_j)``.

    ``logit_scale`` is the log of the inverse temperature (a 0-dim tensor, learnable); it is
    clamped at log(max_logit_scale). ``labels`` (N,), optional: rows with equal labels (e.g. the
    same caption) are positives of each other instead of negatives (multi-positive InfoNCE).
    Under torch.distributed each rank's rows are contrasted with the keys of the global batch
    (gathered with gradient); with DDP's gradient averaging this is the global-batch loss.
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise UserError(
            f"clip_loss needs image and text embeddings of equal shape (N, D); got "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    temperature = torch.exp(-logit_scale.clamp(max=math.log(max_logit_scale)))
    _, size = world()
    if size > 1:  # local rows against the global batch's keys
        all_text, all_images = gather_with_grad(text_emb), gather_with_grad(image_emb)
        if labels is None:
            index = torch.arange(image_emb.shape[0], device=image_emb.device) + rank_offset(image_emb.shape[0])
            i2t = info_nce(image_emb, all_text, positive_index=index, temperature=temperature, check_values=False)
            t2i = info_nce(text_emb, all_images, positive_index=index, temperature=temperature, check_values=False)
        else:
            keys = gather_no_grad(labels)
            i2t = info_nce(image_emb, all_text, labels=labels, key_labels=keys, temperature=temperature, check_values=False)
            t2i = info_nce(text_emb, all_images, labels=labels, key_labels=keys, temperature=temperature, check_values=False)
        return 0.5 * (i2t + t2i)
    i2t = info_nce(image_emb, text_emb, labels=labels, temperature=temperature, check_values=False)
    t2i = info_nce(text_emb, image_emb, labels=labels, temperature=temperature, check_values=False)
    return 0.5 * (i2t + t2i)


@dataclass
class TwoTowerOptions(MethodOptions):
    """Options of both image–text methods."""

    embed_dim: int = option(128, "width of the shared image–text embedding", ge=1)
    gradcache_chunk: int | None = option(
        None, "GradCache: encode this many rows at a time (large batches in fixed memory)", ge=1
    )


@dataclass
class CLIPOptions(TwoTowerOptions):
    """CLIP's options."""

    temperature: float = option(0.07, "initial temperature (logit scale = log 1/τ)", gt=0)
    learn_temperature: bool = option(True, "learn the logit scale")
    max_logit_scale: float = option(100.0, "clamp of exp(logit scale)", gt=1)


@dataclass
class SigLIPOptions(TwoTowerOptions):
    """SigLIP's options."""

    scale_init: float = option(10.0, "initial scale of the pairwise sigmoid logits", gt=0)
    bias_init: float = option(-10.0, "initial bias of the pairwise sigmoid logits")
    learn_scale: bool = option(True, "learn the scale and the bias")


@register_method("clip", options=CLIPOptions, tasks=("image_text",), paper="Radford et al. 2021, arXiv:2103.00020")
class CLIP(nn.Module):
    """CLIP: image and text towers, linear projections, symmetric InfoNCE (SigLIP: sigmoid).

    The image tower is ``encoder``, the text tower ``text_encoder``; the options' type chooses
    the loss (:class:`CLIPOptions`: symmetric InfoNCE with a learnable logit scale;
    :class:`SigLIPOptions`: pairwise sigmoid with learnable scale and bias).
    Batch: ``{"views": [images (B, C, H, W)], "input_ids": (B, L), "attention_mask": (B, L)}``
    and optionally ``"caption_ids"`` (B,): images whose captions are the same text are then
    positives of each other rather than false negatives. Types: images float, normalised (e.g.
    :mod:`contrastkit.augment`); ``input_ids`` long token ids and ``attention_mask`` 1 / 0
    (a Hugging Face tokenizer's); ``caption_ids`` long; row i of the images is captioned by row
    i of the texts; all on the model's device.
    ``forward(images)`` returns the image tower's representation (before projection), like the
    other methods; ``embed_images`` / ``embed_texts`` give the shared-space embeddings.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        options: CLIPOptions | SigLIPOptions | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        opts = resolve_options(type(options) if options is not None else CLIPOptions, options, overrides, "CLIP")
        self.opts = opts
        self.encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(int(image_encoder.out_dim), opts.embed_dim, bias=False)  # type: ignore[arg-type]
        self.text_proj = nn.Linear(int(text_encoder.out_dim), opts.embed_dim, bias=False)  # type: ignore[arg-type]
        self.gradcache_chunk = opts.gradcache_chunk
        clip = opts if isinstance(opts, CLIPOptions) else CLIPOptions()
        self.loss_name = "clip" if isinstance(opts, CLIPOptions) else "siglip"
        self.max_logit_scale = float(clip.max_logit_scale)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / clip.temperature)), requires_grad=self.loss_name == "clip" and clip.learn_temperature
        )
        sig = opts if isinstance(opts, SigLIPOptions) else SigLIPOptions()
        self.siglip = SigLIPLoss(sig.scale_init, sig.bias_init, learnable=sig.learn_scale, gather_distributed=True)
        if self.loss_name != "siglip":
            for p in self.siglip.parameters():
                p.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.encoder(images)
        return out

    def embed_images(self, images: Tensor) -> Tensor:
        """Projected image embeddings (B, embed_dim), not normalised."""
        out: Tensor = self.image_proj(self.encoder(images))
        return out

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Projected text embeddings (B, embed_dim), not normalised."""
        out: Tensor = self.text_proj(self.text_encoder(input_ids, attention_mask))
        return out

    def loss_from_embeddings(self, image_emb: Tensor, text_emb: Tensor, labels: Tensor | None = None) -> Tensor:
        """The CLIP or SigLIP loss of matching rows; equal ``labels`` mark extra positives."""
        if self.loss_name == "siglip":
            out: Tensor = self.siglip(image_emb, text_emb, labels=labels)
            return out
        return clip_loss(
            image_emb, text_emb, self.logit_scale, max_logit_scale=self.max_logit_scale, labels=labels
        )

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        images: Tensor = batch["views"][0]
        ids: Tensor = batch["input_ids"]
        mask: Tensor = batch["attention_mask"]
        labels: Tensor | None = batch.get("caption_ids")
        if self.gradcache_chunk:
            c = self.gradcache_chunk
            towers = [
                Tower(self.embed_images, split_rows(c, images), self.encoder),
                Tower(self.embed_texts, split_rows(c, ids, mask), self.text_encoder),
            ]
            params = [p for p in self.parameters() if p.requires_grad]
            loss, (zi, zt) = gradcache_loss(towers, lambda r: self.loss_from_embeddings(r[0], r[1], labels), params)
        else:
            zi = self.embed_images(images)
            zt = self.embed_texts(ids, mask)
            loss = self.loss_from_embeddings(zi, zt, labels)
        logs: dict[str, Tensor] = {"loss": loss.detach()}
        if self.loss_name == "siglip":
            logs["scale"] = self.siglip.log_scale.detach().exp()
            logs["bias"] = self.siglip.bias.detach().clone()
        else:
            logs["scale"] = self.logit_scale.detach().exp()
        zi_d, zt_d = zi.detach(), zt.detach()

        def retrieval_accuracy() -> dict[str, float]:  # on logged steps only
            a, b = F.normalize(zi_d.float(), dim=1), F.normalize(zt_d.float(), dim=1)
            sims = a @ b.T
            ref = labels if labels is not None else torch.arange(a.shape[0], device=a.device)
            return {"i2t_acc": float((ref[sims.argmax(1)] == ref).float().mean()),
                    "t2i_acc": float((ref[sims.argmax(0)] == ref).float().mean())}

        return StepOutput(loss=loss, logs=logs, diagnostics=retrieval_accuracy)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Clamp the CLIP logit scale to [0, log(max_logit_scale)] after each update (as OpenCLIP)."""
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, math.log(self.max_logit_scale))


register_method(
    "siglip", options=SigLIPOptions, tasks=("image_text",), paper="Zhai et al. 2023, arXiv:2303.15343",
    summary="SigLIP: image and text towers trained with the pairwise sigmoid loss.",
)(CLIP)
