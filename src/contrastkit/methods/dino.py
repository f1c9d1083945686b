"""DINO: self-distillation with no labels (Caron et al. 2021, arXiv:2104.14294).

A student (encoder + DINO head: MLP → bottleneck → L2-norm → weight-normalised linear layer
onto ``out_dim`` outputs) matches the softmax of an EMA teacher. The teacher sees the global
views only and its outputs are centred (an EMA of their batch mean) and sharpened (a low
temperature, warmed up linearly); the student sees every view. The loss is the cross-entropy
between each global view's teacher distribution and every other view's student distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.losses._dtype import upcast
from contrastkit.methods.base import (
    HeadOptions,
    MomentumOptions,
    StepClock,
    StepOutput,
    TwoViewMethod,
    encode_views,
    multi_crop_views,
    zero_gradient,
)
from contrastkit.methods.registry import register_method
from contrastkit.negatives.distributed import gather_no_grad, world
from contrastkit.nn import MLPHead
from contrastkit.nn.momentum import MOMENTUM_SCHEDULES, MomentumEncoder
from contrastkit.options import option


@dataclass
class DINOOptions(MomentumOptions):
    """DINO's options (paper: teacher momentum 0.996 → 1, temperatures 0.04 → 0.07 and 0.1,
    centre momentum 0.9; its 65536 outputs are for ImageNet)."""

    momentum: float = option(0.996, "EMA momentum of the teacher at the start", ge=0, le=1)
    momentum_schedule: str = option("cosine", "momentum → momentum_final", choices=MOMENTUM_SCHEDULES)
    out_dim: int = option(4096, "outputs K of the DINO head (its weight-normalised last layer)", ge=1)
    student_temperature: float = option(0.1, "temperature of the student's softmax", gt=0)
    teacher_temperature: float = option(0.07, "temperature of the teacher's softmax after the warm-up", gt=0)
    warmup_teacher_temperature: float = option(0.04, "teacher temperature at the start of the warm-up", gt=0)
    warmup_teacher_temperature_fraction: float = option(
        0.3, "fraction of training over which the teacher temperature rises linearly (0: none)", ge=0, le=1
    )
    center_momentum: float = option(0.9, "EMA momentum of the centre subtracted from the teacher's outputs", ge=0, le=1)
    freeze_last_layer_steps: int = option(0, "steps at the start during which the head's last layer is not updated", ge=0)
    norm_last_layer: bool = option(
        True, "the head's last layer has rows of length 1 (the paper's default); false: a trained gain per row "
        "(weight normalisation, gains from 1; the paper's choice for ViT-S/16, more stable with small heads)",
    )
    head_activation: str = option("gelu", "activation of the DINO head's MLP", choices=("gelu", "relu"))

    def check_values(self, prefix: str) -> None:
        super().check_values(prefix)
        if self.warmup_teacher_temperature > self.teacher_temperature:
            raise UserError(
                f"{prefix}.warmup_teacher_temperature {self.warmup_teacher_temperature} must be <= "
                f"{prefix}.teacher_temperature {self.teacher_temperature} (the warm-up raises it)"
            )


def teacher_temperature(progress: float, start: float, end: float, warmup_fraction: float) -> float:
    """DINO's teacher temperature at ``progress`` in [0, 1]: linear from ``start`` to ``end``
    over the first ``warmup_fraction`` of training, then ``end``."""
    if warmup_fraction <= 0 or progress >= warmup_fraction:
        return end
    return start + (end - start) * max(progress, 0.0) / warmup_fraction


def dino_loss(student: list[Tensor], teacher: list[Tensor], center: Tensor, student_temp: float, teacher_temp: float) -> Tensor:
    """The mean over (global view i, view v ≠ i) of the batch-averaged cross-entropy
    −Σ_k softmax((t_i − c) / τ_t)_k · log softmax(s_v / τ_s)_k; ``teacher`` holds the G global
    views' teacher outputs and ``student`` the student's outputs of every view, globals first."""
    g, v = len(teacher), len(student)
    t = torch.stack([F.softmax((upcast(x) - center) / teacher_temp, dim=1) for x in teacher])  # G, B, K
    s = torch.stack([F.log_softmax(upcast(x) / student_temp, dim=1) for x in student])  # V, B, K
    # Σ_i Σ_{v≠i} t_i·s_v = (Σ_i t_i)·(Σ_v s_v) − Σ_i t_i·s_i, one pass over each
    every = (t.sum(dim=0) * s.sum(dim=0)).sum(dim=1)
    same = (t * s[:g]).sum(dim=(0, 2))
    return -(every - same).mean() / (g * (v - 1))


class DINOHead(nn.Module):
    """DINO's projection head: an MLP onto a bottleneck, L2-normalised, then a weight-normalised
    linear layer: rows ``gain · v / |v|``, the gain fixed at 1 (``norm_last_layer``, rows of length
    1) or a trained parameter per row starting at 1 (``gain``)."""

    def __init__(self, in_dim: int, head: HeadOptions, out_dim: int, activation: str = "gelu",
                 norm_last_layer: bool = True) -> None:
        super().__init__()
        self.mlp = MLPHead(
            in_dim, head.projection_hidden_dim, head.projection_dim, num_layers=head.projection_layers,
            batch_norm=head.projection_batch_norm, activation=activation,
        )
        self.last = nn.Parameter(torch.empty(out_dim, head.projection_dim))
        nn.init.trunc_normal_(self.last, std=0.02)
        self.gain = None if norm_last_layer else nn.Parameter(torch.ones(out_dim))  # 1-D: no weight decay

    def bottleneck(self, x: Tensor) -> Tensor:
        return F.normalize(self.mlp(x), dim=1)

    def logits(self, b: Tensor, frozen: bool = False) -> Tensor:
        """The last layer's outputs; ``frozen``: no gradient reaches its weights (nor its gains)."""
        weight = F.normalize(zero_gradient(self.last) if frozen else self.last, dim=1)
        if self.gain is not None:
            weight = (zero_gradient(self.gain) if frozen else self.gain)[:, None] * weight
        return F.linear(b, weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(self.bottleneck(x))


@register_method("dino", options=DINOOptions, tasks=("image",), paper="Caron et al. 2021, arXiv:2104.14294")
class DINO(TwoViewMethod):
    """DINO: a student matches its EMA teacher's centred, sharpened softmax over the views.

    Student: encoder + :class:`DINOHead` (the ``model.projection_*`` MLP onto a bottleneck of
    ``projection_dim``, then ``out_dim`` outputs). Teacher: its EMA copy (``momentum`` →
    ``momentum_final``), on the global views only. The centre (a buffer) follows the batch mean
    of the teacher's outputs with ``center_momentum``; the teacher temperature rises from
    ``warmup_teacher_temperature`` to ``teacher_temperature`` over the first
    ``warmup_teacher_temperature_fraction`` of training; the last layer is frozen for the first
    ``freeze_last_layer_steps`` steps; its rows have length 1 unless ``norm_last_layer`` is false
    (then a trained gain per row).

    Batch: ``training_step({"views": [g1, g2, ..., l1, ...], "global_views": G})``: G >= 2
    global views (the training size) and then any local views (smaller crops), augmented views
    of the same B images, each a float (B, C, H, W) tensor, normalised, on the model's device;
    without ``"global_views"`` every view is global (e.g. ``{"views": [x1, x2]}``).
    """

    multi_crop = True
    Options = DINOOptions
    opts: DINOOptions
    default_head = HeadOptions(projection_dim=256, projection_hidden_dim=512, projection_layers=3)
    center: Tensor

    def build(self) -> None:
        o = self.opts
        self.dino_head = DINOHead(self.feature_dim, self.head, o.out_dim, o.head_activation, o.norm_last_layer)
        self.teacher = MomentumEncoder(
            nn.Sequential(self.encoder, self.dino_head), o.momentum, o.momentum_final, o.momentum_schedule
        )
        self.register_buffer("center", torch.zeros(1, o.out_dim))
        self.clock = StepClock()

    def teacher_temperature(self) -> float:
        o = self.opts
        return teacher_temperature(
            self.clock.progress, o.warmup_teacher_temperature, o.teacher_temperature, o.warmup_teacher_temperature_fraction
        )

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        o = self.opts
        views, n_global = multi_crop_views(batch, "DINO")
        n = views[0].shape[0]
        with torch.no_grad():
            t = upcast(torch.cat(encode_views(self.teacher, views[:n_global])))
        b = self.dino_head.bottleneck(torch.cat(encode_views(self.encoder, views)))
        s = self.dino_head.logits(b, frozen=self.clock.steps < o.freeze_last_layer_steps)
        temp = self.teacher_temperature()
        loss = dino_loss(list(s.chunk(len(views))), list(t.chunk(n_global)), self.center, o.student_temperature, temp)
        self.update_center(t)
        return self.output(
            loss, b[:n], b[n : 2 * n], teacher_temperature=temp, momentum=self.teacher.current.clone()
        )

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """centre ← m · centre + (1 − m) · mean of the teacher's outputs over the global batch."""
        rows = teacher_out.shape[0] * world()[1]
        mean = gather_no_grad(teacher_out.sum(dim=0, keepdim=True)).sum(dim=0, keepdim=True) / rows
        m = self.opts.center_momentum
        self.center.mul_(m).add_(mean, alpha=1.0 - m)

    def on_step_end(self, step: int, total_steps: int) -> None:
        super().on_step_end(step, total_steps)
        self.clock.advance(step, total_steps)
        self.teacher.update(nn.Sequential(self.encoder, self.dino_head), self.progress)
