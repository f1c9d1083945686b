"""Losses for scored sentence pairs (STS-style data: sentence1, sentence2, a similarity score).

- **CoSENT** (Su 2022, "CoSENT: a more efficient sentence vector scheme than Sentence-BERT",
  kexue.fm/archives/8847): a ranking loss over the pairs of a batch. Pair i (embeddings x_i,
  y_i, score s_i) should have a larger cosine than pair j whenever s_i > s_j::

      L = log(1 + sum_{(i, j): s_i > s_j} exp(scale * (cos_j - cos_i)))

  with scale 20 (a temperature of 0.05). Only the order of the scores matters, not their scale.
- **AnglE** (Li & Li 2023, "AnglE-optimized Text Embeddings", arXiv:2309.12871): the same
  ranking applied to an *angle* similarity computed in complex space, added to CoSENT and to an
  in-batch-negative (InfoNCE) term::

      L = w_cos * L_cos + w_ibn * L_ibn + w_angle * L_angle

  * ``L_cos``: CoSENT above (scale ``cosine_scale``, 20).
  * ``L_ibn``: in-batch negatives over the 2N texts of the batch: each text of a *positive*
    pair (``positive``; by default every pair) must pick its partner among the other 2N - 1
    texts (cosine, scale ``ibn_scale`` 20, its own text left out). The rows of pairs that are
    not positive add 0 and the sum is divided by 2N, as in the authors' reference code. It goes
    through the one InfoNCE kernel (:func:`~contrastkit.losses.info_nce`).
  * ``L_angle``: each embedding of even width 2k is split into a real part (its first k
    coordinates) and an imaginary part (the last k), z = a + ib and w = c + id. The quotient
    z / w, scaled by |w| / |z| (vector norms), has real parts (a c + b d) / (|z| |w|) and
    imaginary parts (b c - a d) / (|z| |w|); their sum over all 2k parts, in absolute value, is
    the pair's angle similarity (:func:`angle_similarity`: it equals cos(z, w) plus a "sine"
    term and is 1 for identical embeddings). ``L_angle`` is CoSENT's ranking of these values
    (scale ``angle_scale``, 1). The paper writes the objective with the angle *difference*
    Δθ; its reference code (and sentence-transformers' ``AnglELoss``) rank the pooled quotient
    as a similarity, which is what is implemented here.

  Defaults: w_cos = w_ibn = w_angle = 1, scales 20 / 20 / 1 (the defaults of the authors'
  training script published with the paper). sentence-transformers' ``AnglELoss`` is the angle
  term alone (:func:`angle_ranking_loss`, there with scale 20); ``AnglELoss(cosine_weight=0,
  ibn_weight=0, angle_scale=20)`` reproduces it.

Scores are compared only within a batch; ties add nothing. Computed in float32 (float64 for
float64 inputs). With ``gather_distributed=True`` under torch.distributed, the batch is every
process's pairs (gathered in rank order, differentiable w.r.t. this process's rows) and each
process computes the loss of that global batch: with DistributedDataParallel's average of the
gradients, exactly the gradient of one process on the concatenated batch (outside a process
group the option changes nothing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.losses.info_nce import info_nce
from contrastkit.negatives.distributed import gather_no_grad, gather_with_grad


def _check_pairs(name: str, x: Tensor, y: Tensor, scores: Tensor) -> torch.dtype:
    if x.dim() != 2 or x.shape != y.shape:
        raise UserError(f"{name} needs x and y of equal shape (N, D); got {tuple(x.shape)} and {tuple(y.shape)}")
    if scores.shape != (x.shape[0],):
        raise UserError(f"{name} needs scores of shape (N,) = ({x.shape[0]},); got {tuple(scores.shape)}")
    return torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32


def _global(x: Tensor, y: Tensor, scores: Tensor, gather: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The pairs of every process, in rank order (``gather``; the identity outside a process group)."""
    if not gather:
        return x, y, scores
    return gather_with_grad(x), gather_with_grad(y), gather_no_grad(scores)


def _rank_loss(similarity: Tensor, scores: Tensor, scale: float) -> Tensor:
    """``log(1 + sum_{s_i > s_j} exp(scale * (sim_j - sim_i)))`` of one similarity per pair."""
    sim = similarity * scale
    diff = sim[None, :] - sim[:, None]  # [i, j] = sim_j - sim_i
    higher = scores[:, None] > scores[None, :]  # pair i should be more similar than pair j
    terms = torch.where(higher, diff, torch.full_like(diff, float("-inf"))).reshape(-1)
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


def cosent_loss(x: Tensor, y: Tensor, scores: Tensor, *, scale: float = 20.0, gather_distributed: bool = False) -> Tensor:
    """CoSENT: pair i = (x_i, y_i) with score s_i; ``log(1 + sum_{s_i > s_j} exp(scale *
    (cos_j - cos_i)))`` over the N pairs of the batch (Su 2022). A scalar.

    Example::

        x, y = torch.randn(8, 32), torch.randn(8, 32)  # sentence 1 and sentence 2 of 8 pairs
        loss = cosent_loss(x, y, scores=torch.rand(8) * 5)
    """
    dtype = _check_pairs("cosent_loss", x, y, scores)
    x, y, scores = _global(x, y, scores, gather_distributed)
    cos = F.cosine_similarity(x.to(dtype), y.to(dtype), dim=1)
    return _rank_loss(cos, scores, scale)


def angle_similarity(x: Tensor, y: Tensor) -> Tensor:
    """AnglE's similarity of pairs (N,): real parts = first half of each row, imaginary parts =
    the second half; the summed real and imaginary parts of the quotient x / y scaled by
    |y| / |x|, in absolute value (equal to ``|cos(x, y) + sum(b c - a d) / (|x| |y|)|``)."""
    if x.dim() != 2 or x.shape != y.shape or x.shape[1] % 2:
        raise UserError(
            f"angle_similarity needs x and y of equal shape (N, D) with an even D (real and imaginary "
            f"halves); got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    a, b = x.chunk(2, dim=1)
    c, d = y.chunk(2, dim=1)
    norms = x.norm(dim=1) * y.norm(dim=1)
    real = (a * c + b * d).sum(1)
    imaginary = (b * c - a * d).sum(1)
    return ((real + imaginary) / norms).abs()


def angle_ranking_loss(x: Tensor, y: Tensor, scores: Tensor, *, scale: float = 1.0) -> Tensor:
    """AnglE's angle term: CoSENT's ranking of :func:`angle_similarity` instead of the cosine."""
    dtype = _check_pairs("angle_ranking_loss", x, y, scores)
    return _rank_loss(angle_similarity(x.to(dtype), y.to(dtype)), scores, scale)


def _in_batch_term(x: Tensor, y: Tensor, positive: Tensor | None, scale: float) -> Tensor:
    """AnglE's in-batch negatives: the 2N texts against each other (self excluded), each text of
    a positive pair with its partner as positive; summed over texts and divided by 2N."""
    n = x.shape[0]
    texts = torch.cat([x, y])
    rows = torch.arange(2 * n, device=x.device)
    partner = (rows + n) % (2 * n)
    if positive is not None:
        keep = torch.cat([positive, positive]).to(device=x.device, dtype=torch.bool)
        partner = torch.where(keep, partner, torch.full_like(partner, -1))
    per_text = info_nce(
        texts, None, positive_index=partner, temperature=1.0 / scale, similarity="cosine",
        reduction="none", check_values=False,
    )
    return per_text.sum() / (2 * n)


def angle_loss(
    x: Tensor,
    y: Tensor,
    scores: Tensor,
    *,
    positive: Tensor | None = None,
    cosine_weight: float = 1.0,
    ibn_weight: float = 1.0,
    angle_weight: float = 1.0,
    cosine_scale: float = 20.0,
    ibn_scale: float = 20.0,
    angle_scale: float = 1.0,
    gather_distributed: bool = False,
) -> Tensor:
    """AnglE (Li & Li 2023): ``cosine_weight * cosent_loss + ibn_weight * in-batch InfoNCE +
    angle_weight * angle_ranking_loss`` of N scored pairs (x_i, y_i, s_i); see the module's
    docstring. ``positive`` (N,) bool: the pairs whose texts are each other's positive in the
    in-batch term (None: every pair). A term whose weight is 0 is not computed. A scalar.

    Example::

        x, y = torch.randn(8, 32), torch.randn(8, 32)
        scores = torch.rand(8) * 5
        loss = angle_loss(x, y, scores, positive=scores >= 4)
    """
    dtype = _check_pairs("angle_loss", x, y, scores)
    if positive is not None and positive.shape != scores.shape:
        raise UserError(f"angle_loss needs positive of shape (N,) = ({x.shape[0]},); got {tuple(positive.shape)}")
    if gather_distributed and positive is not None:
        positive = gather_no_grad(positive.to(torch.uint8)).bool()  # gloo gathers no bool tensors
    x, y, scores = _global(x, y, scores, gather_distributed)
    a, b = x.to(dtype), y.to(dtype)
    loss = a.new_zeros(())
    if cosine_weight:
        loss = loss + cosine_weight * _rank_loss(F.cosine_similarity(a, b, dim=1), scores, cosine_scale)
    if ibn_weight:
        loss = loss + ibn_weight * _in_batch_term(a, b, positive, ibn_scale)
    if angle_weight:
        loss = loss + angle_weight * _rank_loss(angle_similarity(a, b), scores, angle_scale)
    return loss


class CoSENTLoss(nn.Module):
    """:func:`cosent_loss` with its scale (Su 2022: 20).

    Example::

        loss = CoSENTLoss()(torch.randn(8, 32), torch.randn(8, 32), torch.rand(8) * 5)
    """

    def __init__(self, scale: float = 20.0, gather_distributed: bool = False) -> None:
        super().__init__()
        if not scale > 0:
            raise UserError(f"CoSENT scale must be > 0; got {scale!r}")
        self.scale = float(scale)
        self.gather_distributed = gather_distributed

    def forward(self, x: Tensor, y: Tensor, scores: Tensor) -> Tensor:
        return cosent_loss(x, y, scores, scale=self.scale, gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class AnglELoss(nn.Module):
    """:func:`angle_loss` with its weights and scales (defaults: the authors' 1 / 1 / 1 and
    20 / 20 / 1).

    Example::

        loss = AnglELoss()(torch.randn(8, 32), torch.randn(8, 32), torch.rand(8) * 5)
    """

    def __init__(
        self,
        cosine_weight: float = 1.0,
        ibn_weight: float = 1.0,
        angle_weight: float = 1.0,
        cosine_scale: float = 20.0,
        ibn_scale: float = 20.0,
        angle_scale: float = 1.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed
        weights = {"cosine_weight": cosine_weight, "ibn_weight": ibn_weight, "angle_weight": angle_weight}
        for name, value in weights.items():
            if not value >= 0:
                raise UserError(f"AnglE {name} must be >= 0; got {value!r}")
        scales = {"cosine_scale": cosine_scale, "ibn_scale": ibn_scale, "angle_scale": angle_scale}
        for name, value in scales.items():
            if not value > 0:
                raise UserError(f"AnglE {name} must be > 0; got {value!r}")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.scales = {k: float(v) for k, v in scales.items()}

    def forward(self, x: Tensor, y: Tensor, scores: Tensor, positive: Tensor | None = None) -> Tensor:
        return angle_loss(x, y, scores, positive=positive, **self.weights, **self.scales,
                          gather_distributed=self.gather_distributed)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in {**self.weights, **self.scales}.items())
