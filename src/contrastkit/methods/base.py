"""What every method offers the trainer and the evaluation: a small interface."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from contrastkit.diagnostics import collapse_stats
from contrastkit.encoders.image import ImageEncoder, ModelConfig, build_encoder
from contrastkit.errors import UserError
from contrastkit.losses.info_nce import info_nce
from contrastkit.methods.registry import MethodOptions, all_methods, get_method, resolve_options
from contrastkit.negatives.mining import NegativeSampling, negative_sampling_from_config
from contrastkit.nn import MLPHead
from contrastkit.nn.heads import HeadOptions
from contrastkit.nn.momentum import MOMENTUM_SCHEDULES
from contrastkit.options import names_of, option
from contrastkit.similarity import SIMILARITIES


@dataclass
class StepOutput:
    """A training step's loss (to back-propagate), its scalar logs — tensors (detached) or
    numbers: the loop turns them into numbers on logged steps only, so that a step never waits
    for the device — and ``diagnostics``, computed only on logged steps (e.g. collapse
    statistics of the batch's embeddings)."""

    loss: Tensor
    logs: dict[str, Any] = field(default_factory=dict)
    diagnostics: Callable[[], dict[str, float]] | None = None


class Method(Protocol):
    """The trainer's view of a method: an nn.Module with an encoder and a training step."""

    encoder: nn.Module

    def training_step(self, batch: dict[str, Any]) -> StepOutput: ...

    def on_step_end(self, step: int, total_steps: int) -> None: ...


@dataclass
class ImageMethodOptions(MethodOptions):
    """Options of every image method."""

    diagnostics: bool = option(
        True, "log collapse diagnostics (per-dim std, effective rank, alignment, uniformity)"
    )


@dataclass
class ContrastOptions(ImageMethodOptions):
    """Options of the InfoNCE methods: temperature, similarity and the negative strategy."""

    temperature: float = option(0.2, "InfoNCE temperature τ", gt=0)
    similarity: str = option("cosine", "similarity of embeddings", choices=SIMILARITIES)
    negatives: NegativeSampling = option(
        help="which negatives count and how much (hard negatives, debiasing)", factory=NegativeSampling
    )


@dataclass
class MomentumOptions(ImageMethodOptions):
    """Options of the methods with an EMA (momentum) target or key encoder."""

    momentum: float = option(0.99, "EMA momentum of the target at the start", ge=0, le=1)
    momentum_final: float = option(1.0, "EMA momentum at the end of training", ge=0, le=1)
    momentum_schedule: str = option("cosine", "momentum → momentum_final", choices=MOMENTUM_SCHEDULES)

    def check_values(self, prefix: str) -> None:
        if self.momentum > self.momentum_final:
            raise UserError(
                f"{prefix}.momentum {self.momentum} and {prefix}.momentum_final "
                f"{self.momentum_final} must satisfy momentum <= momentum_final"
            )


class TwoViewMethod(nn.Module):
    """Shared plumbing of the image methods: options, the encoder, ``forward`` (the
    representation used for evaluation and export), the training progress in [0, 1], and
    collapse diagnostics.

    Construct with an options object, keyword overrides, or both:
    ``SimCLR(encoder, 512, temperature=0.5, projection_dim=64)``; keywords naming a field of
    :class:`HeadOptions` set the projection head (default: the method's ``default_head``).

    Batch (every image method): ``training_step({"views": [x1, x2, ...]})``, augmented views
    of the same B images, each a float (B, C, H, W) tensor, normalised, on the model's device
    (e.g. calls of a :mod:`contrastkit.augment` augmentation on a uint8 batch); SupCon reads
    ``"labels"`` too. Returns a :class:`StepOutput` (its ``loss`` to back-propagate).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A method's docstring states its batch: the two views below, unless it says otherwise."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__doc__") or ""
        if "Batch" not in own:
            cls.__doc__ = own.rstrip() + "\n\n    Batch: the views of :class:`TwoViewMethod` (``{\"views\": [x1, x2]}``).\n"

    Options: ClassVar[type[ImageMethodOptions]] = ImageMethodOptions
    default_head: ClassVar[HeadOptions] = HeadOptions()
    # takes more than two views per image, of several sizes (data.crops: global views first, see
    # global_view_count and encode_views); the others train on exactly two views of one size
    multi_crop: ClassVar[bool] = False
    opts: ImageMethodOptions

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        options: ImageMethodOptions | None = None,
        *,
        head: HeadOptions | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        head_names = set(names_of(HeadOptions))
        head_kw = {k: v for k, v in overrides.items() if k in head_names}
        self.head = resolve_options(HeadOptions, head or self.default_head, head_kw, owner)
        self.opts = resolve_options(
            self.Options, options, {k: v for k, v in overrides.items() if k not in head_names}, owner
        )
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.diagnostics = self.opts.diagnostics
        self.progress = 0.0
        self.build()

    def build(self) -> None:
        """Create the method's own modules (heads, momentum copies, queues) from ``self.opts``
        and ``self.head``; called at the end of ``__init__``."""

    def projection_head(self, **kwargs: Any) -> MLPHead:
        """The configured projection MLP from the encoder's features (``kwargs``: MLPHead's)."""
        h = self.head
        kwargs.setdefault("batch_norm", h.projection_batch_norm)
        return MLPHead(
            self.feature_dim, h.projection_hidden_dim, h.projection_dim, num_layers=h.projection_layers, **kwargs
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.encoder(x)
        return out

    @staticmethod
    def views_of(batch: dict[str, Any], name: str) -> tuple[Tensor, Tensor]:
        views: list[Tensor] = batch["views"]
        if len(views) != 2:
            raise UserError(f"{name} trains on exactly 2 views per image; set data.views=2 (got {len(views)})")
        return views[0], views[1]

    def output(self, loss: Tensor, z1: Tensor, z2: Tensor, **extra: Any) -> StepOutput:
        """The step's output: the loss, ``extra`` logs, and (``method.diagnostics``) the collapse
        statistics of the two views' embeddings, computed on logged steps only."""
        logs = {"loss": loss.detach(), **extra}
        if not self.diagnostics:
            return StepOutput(loss, logs)
        a, b = z1.detach(), z2.detach()
        return StepOutput(loss, logs, lambda: collapse_stats(a, b))

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.progress = min(1.0, (step + 1) / max(total_steps, 1))

    def kernel_options(self) -> dict[str, Any]:
        """temperature, similarity and the negative strategy at the current progress, for
        :func:`info_nce` (InfoNCE methods only)."""
        o = self.opts
        assert isinstance(o, ContrastOptions)
        kwargs: dict[str, Any] = {"temperature": o.temperature, "similarity": o.similarity}
        strategy = negative_sampling_from_config(o.negatives)
        if strategy is not None:
            kwargs["negatives"] = strategy.at(self.progress)
        return kwargs


def global_view_count(batch: dict[str, Any]) -> int:
    """How many of ``batch["views"]`` are global crops: the loaders put the global views (the
    training size) first and the local views (smaller multi-crop views) after them, and say how
    many are global in ``batch["global_views"]``; a batch without that key has global views only."""
    return int(batch.get("global_views", len(batch["views"])))


def encode_views(module: Callable[[Tensor], Tensor], views: list[Tensor]) -> list[Tensor]:
    """``module`` applied to every view, one call per run of consecutive views of the same size
    (multi-crop: the global views in one call, the local views in another, as DINO's and SwAV's
    multi-crop wrappers do); returns one output per view, in order."""
    out: list[Tensor] = []
    start = 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[1:] == views[start].shape[1:]:
            end += 1
        y = module(torch.cat(views[start:end], dim=0))
        out.extend(y.chunk(end - start, dim=0))
        start = end
    return out


def multi_crop_views(batch: dict[str, Any], name: str) -> tuple[list[Tensor], int]:
    """``batch["views"]`` and how many of them are global (first), checked for the methods that
    take any number of views: at least two global views, every view of the same images."""
    views: list[Tensor] = batch["views"]
    n_global = global_view_count(batch)
    if n_global < 2 or n_global > len(views):
        raise UserError(
            f"{name} needs at least 2 global views (the training size) before any local ones; "
            f"got {n_global} global of {len(views)} views"
        )
    if any(v.shape[0] != views[0].shape[0] for v in views):
        raise UserError(f"{name}: every view holds the same images; got batch sizes {[v.shape[0] for v in views]}")
    return views, n_global


def zero_gradient(x: Tensor) -> Tensor:
    """``x`` in the forward pass with a zero gradient in the backward: a parameter frozen for a
    while stays in the graph, as DistributedDataParallel expects of every parameter each step
    (SwAV's frozen prototypes, DINO's frozen last layer). Frozen only for an optimiser whose
    update of a zero gradient is zero up to a rescaling, which is no change for the
    normalised weights these methods freeze."""
    return x.detach() + x * 0.0


class StepClock(nn.Module):
    """Steps done and training progress in [0, 1], for schedules read inside a training step:
    kept on the host (a step never reads the device) and in buffers, so that a checkpoint
    carries them and the first step after a resume sees the same values as an uninterrupted run."""

    done: Tensor
    fraction: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("done", torch.zeros((), dtype=torch.long))
        self.register_buffer("fraction", torch.zeros((), dtype=torch.float64))
        self.steps, self.progress = 0, 0.0
        self.register_load_state_dict_post_hook(lambda module, keys: module._read())

    def _read(self) -> None:
        self.steps, self.progress = int(self.done), float(self.fraction)

    def advance(self, step: int, total_steps: int) -> None:
        """After step ``step`` (0-based) of ``total_steps``."""
        self.steps, self.progress = step + 1, min(1.0, (step + 1) / max(total_steps, 1))
        self.done.fill_(self.steps)
        self.fraction.fill_(self.progress)
def check_views(method: str, views: int, sizes: int = 1) -> None:
    """One-line error (at config validation) when the image method ``method`` cannot train on
    ``views`` views per image of ``sizes`` sizes: more than two, or several sizes, need a method
    with ``multi_crop``."""
    if (views == 2 and sizes == 1) or get_method(method, "image").multi_crop:
        return
    takers = ", ".join(sorted(m.name for m in all_methods() if m.multi_crop and "image" in m.tasks))
    given = f"data.crops gives {views} views of {sizes} sizes" if sizes > 1 else f"the recipe gives {views} views per image"
    raise UserError(f"method {method} trains on exactly 2 views of one size and {given}; the methods that take "
                    f"more views and multi-crop (data.crops): {takers}")


def contrast_across_ranks(
    z: Tensor, sample_labels: Tensor, views: int, **kernel_kwargs: Any
) -> Tensor:
    """Multi-view InfoNCE of this rank's rows ``z`` (views stacked: [v1; v2; ...]) against the
    rows of every rank (SimCLR / SupCon under DDP): :func:`~contrastkit.losses.info_nce` with
    ``gather_distributed=True``. ``sample_labels`` (n,) must be unique across ranks for instance
    discrimination; each row's own key is left out of positives and denominator."""
    return info_nce(z, labels=sample_labels.repeat(views), gather_distributed=True, check_values=False, **kernel_kwargs)


def embedding_stats(z: Tensor, z2: Tensor | None = None) -> dict[str, float]:
    """Collapse diagnostics of a batch of embeddings (see contrastkit.diagnostics)."""
    return collapse_stats(z, z2)


def build_image_method(
    method: MethodOptions, model: ModelConfig, channels: int, size: int, *, encoder: ImageEncoder | None = None
) -> nn.Module:
    """The configured image method around a fresh encoder built from the ``model`` section (or
    around ``encoder``, e.g. one started from saved weights: before the method copies it)."""
    encoder = build_encoder(model, channels, size) if encoder is None else encoder
    spec = get_method(method.name, "image")
    head = HeadOptions(**{f.name: getattr(model, f.name) for f in dataclasses.fields(HeadOptions)})
    return spec.build(method, encoder=encoder, feature_dim=int(encoder.out_dim), head=head)
