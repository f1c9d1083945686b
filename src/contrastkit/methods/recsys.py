"""Recommenders trained on implicit feedback: MF-BPR, LightGCN, SGL, SimGCL, XSimGCL.

Each is an nn.Module with `training_step(batch) -> StepOutput` over BPR triples from
`contrastkit.data.interactions.BPRLoader` and `embeddings() -> (users, items)` for scoring
(dot product). The contrastive terms call the one InfoNCE kernel (`contrastkit.losses.info_nce`)
over the unique users and positive items of the batch: view 1 rows are queries, view 2 rows
keys, and a node's positive is itself in the other view. Total loss:
BPR + λ · (InfoNCE_users + InfoNCE_items) + reg · ½‖layer-0 embeddings of the batch‖² / B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.diagnostics import normalised_std
from contrastkit.encoders.graph import LayerHook, LightGCNEncoder, normalized_adjacency
from contrastkit.errors import UserError
from contrastkit.losses import bpr_loss, info_nce
from contrastkit.methods.base import StepOutput
from contrastkit.methods.registry import MethodOptions, register_method, resolve_options
from contrastkit.options import option

SGL_AUGMENTATIONS = ("nd", "ed", "rw")


@dataclass
class GraphOptions(MethodOptions):
    """Options of every recommender."""

    embedding_dim: int = option(64, "width of the user and item embeddings", ge=1)
    reg: float = option(1e-4, "L2 weight on the batch's layer-0 embeddings", ge=0)


@dataclass
class LightGCNOptions(GraphOptions):
    """Options of the graph recommenders."""

    layers: int = option(2, "LightGCN propagation layers", ge=1)


@dataclass
class ContrastiveGraphOptions(LightGCNOptions):
    """Options of the recommenders with a contrastive term."""

    cl_weight: float = option(0.1, "weight λ of the InfoNCE term", ge=0)
    temperature: float = option(0.2, "temperature τ of the InfoNCE term", gt=0)


@dataclass
class SGLOptions(ContrastiveGraphOptions):
    """SGL's options."""

    augmentation: str = option("ed", "node dropout, edge dropout or random walk", choices=SGL_AUGMENTATIONS)
    drop_ratio: float = option(0.1, "share of nodes / edges dropped in each view", ge=0, lt=1)


@dataclass
class SimGCLOptions(ContrastiveGraphOptions):
    """SimGCL's options."""

    noise_eps: float = option(0.1, "magnitude ε of the uniform noise added to every layer", ge=0)


@dataclass
class XSimGCLOptions(SimGCLOptions):
    """XSimGCL's options."""

    cl_layer: int = option(1, "the layer contrasted with the final embeddings", ge=1)

    def check_values(self, prefix: str) -> None:
        if self.cl_layer > self.layers:
            raise UserError(
                f"{prefix}.cl_layer must be in [1, {self.layers}] ({prefix}.layers), got {self.cl_layer}"
            )


class GraphRecommender(nn.Module):
    """Base recommender: BPR on the mean of L LightGCN layers over the training graph.

    Subclasses choose the layers (MF: none) and add a contrastive term. Built from
    ``(n_users, n_items, train_pairs)`` and an options object and/or keyword overrides.

    Batch (every recommender: MF, LightGCN, SGL, SimGCL, XSimGCL): BPR triples
    ``training_step({"users": u, "pos": i, "neg": j, "epoch": e})`` with ``u``, ``i``, ``j``
    long (B,) tensors on the model's device — user u interacted with item i (a row of
    ``train_pairs``) and not with item j (a sampled negative) — and ``epoch`` an int, optional
    (SGL draws its two subgraph views once per epoch; default 0). SGL, SimGCL and XSimGCL
    contrast the batch's unique users and positive items.
    """

    include_ego = True  # mean over layers 0..L (False: 1..L)
    Options: ClassVar[type[GraphOptions]] = LightGCNOptions

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_pairs: np.ndarray | Tensor,
        options: GraphOptions | None = None,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.opts = resolve_options(self.Options, options, overrides, type(self).__name__)
        layers = int(getattr(self.opts, "layers", 0))
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.reg = float(self.opts.reg)
        self.seed = int(seed)
        self.encoder = LightGCNEncoder(self.n_users, self.n_items, self.opts.embedding_dim, layers)
        pairs = torch.as_tensor(np.asarray(train_pairs), dtype=torch.long)
        self.train_users, self.train_items = pairs[:, 0], pairs[:, 1]
        self.graph_device = torch.device(device)
        self.adj: Tensor | None = (
            normalized_adjacency(
                self.n_users, self.n_items, self.train_users, self.train_items, device=device
            )
            if layers > 0
            else None
        )

    # ------------------------------------------------------------------ embeddings

    def forward(self) -> tuple[Tensor, Tensor]:
        """Final user (U, D) and item (I, D) embeddings on the full training graph, no noise."""
        return self.encoder(self.adj, include_ego=self.include_ego)

    @torch.no_grad()
    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Detached final embeddings for ranking and export."""
        users, items = self.forward()
        return users.detach(), items.detach()

    # ------------------------------------------------------------------ losses

    def rec_and_contrast(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        """User and item embeddings for the BPR term, and the weighted contrastive term."""
        users, items = self.forward()
        return users, items, None

    def _reg_loss(self, u: Tensor, p: Tensor, n: Tensor) -> Tensor:
        enc = self.encoder
        sq = enc.user[u].pow(2).sum() + enc.item[p].pow(2).sum() + enc.item[n].pow(2).sum()
        return self.reg * 0.5 * sq / u.shape[0]

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        u, p, n = batch["users"], batch["pos"], batch["neg"]
        users, items, contrast = self.rec_and_contrast(batch)
        ue = users[u]
        bpr = bpr_loss((ue * items[p]).sum(1), (ue * items[n]).sum(1))
        loss = bpr + self._reg_loss(u, p, n)
        logs = {"bpr": bpr.detach()}
        if contrast is not None:
            loss = loss + contrast
            logs["contrast"] = contrast.detach()
        logs["loss"] = loss.detach()
        sample = ue[:256].detach()
        # collapse check on a cheap sample, on logged steps
        return StepOutput(loss=loss, logs=logs, diagnostics=lambda: {"emb_std": normalised_std(sample)})

    def on_step_end(self, step: int, total_steps: int) -> None:
        """No momentum encoder or schedule of its own."""


@register_method("mf", options=GraphOptions, tasks=("recsys",), paper="Rendle et al. 2009, arXiv:1205.2618")
class MFBPR(GraphRecommender):
    """Matrix factorisation trained with BPR: no graph propagation.

    Batch: BPR triples ``{"users", "pos", "neg"}`` (long (B,)) and ``"epoch"``, as
    :class:`GraphRecommender` describes.
    """

    Options = GraphOptions


@register_method("lightgcn", options=LightGCNOptions, tasks=("recsys",), paper="He et al. 2020, arXiv:2002.02126")
class LightGCN(GraphRecommender):
    """LightGCN: BPR on parameter-free neighbourhood averaging over the user–item graph.

    The embedding is the mean of layers 0..L of the normalised-graph propagation.

    Batch: BPR triples ``{"users", "pos", "neg"}`` (long (B,)) and ``"epoch"``, as
    :class:`GraphRecommender` describes.
    """


class _Contrastive(GraphRecommender):
    """Shared InfoNCE term over two views of the unique users and positive items of a batch."""

    opts: ContrastiveGraphOptions

    def contrast(
        self,
        view1: tuple[Tensor, Tensor],
        view2: tuple[Tensor, Tensor],
        batch: dict[str, Any],
    ) -> Tensor:
        """λ · (InfoNCE over unique batch users + InfoNCE over unique positive items)."""
        u = torch.unique(batch["users"])
        i = torch.unique(batch["pos"])
        t = self.opts.temperature
        user_term = info_nce(view1[0][u], view2[0][u], temperature=t, similarity="cosine", check_values=False)
        item_term = info_nce(view1[1][i], view2[1][i], temperature=t, similarity="cosine", check_values=False)
        return self.opts.cl_weight * (user_term + item_term)


@register_method("sgl", options=SGLOptions, tasks=("recsys",), paper="Wu et al. 2021, arXiv:2010.10783")
class SGL(_Contrastive):
    """SGL: self-supervised graph learning, InfoNCE between two stochastic subgraphs.

    The subgraphs are redrawn at the start of every epoch (seeded by the epoch, so resumes are
    exact): node dropout (nd), edge dropout (ed) or random walk (rw: a different edge-dropped
    graph per layer). The BPR term uses the full graph.

    Batch: BPR triples ``{"users", "pos", "neg"}`` (long (B,)) and ``"epoch"``, as
    :class:`GraphRecommender` describes. (``"epoch"`` chooses the subgraphs)
    """

    Options = SGLOptions
    opts: SGLOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.views: tuple[list[Tensor], list[Tensor]] | None = None
        self.views_epoch: int | None = None

    def _subgraph(self, gen: torch.Generator) -> Tensor:
        keep_ratio = 1.0 - self.opts.drop_ratio
        users, items = self.train_users, self.train_items
        if self.opts.augmentation == "nd":
            keep_u = torch.rand(self.n_users, generator=gen) < keep_ratio
            keep_i = torch.rand(self.n_items, generator=gen) < keep_ratio
            keep = keep_u[users] & keep_i[items]
        else:
            keep = torch.rand(users.shape[0], generator=gen) < keep_ratio
        return normalized_adjacency(
            self.n_users, self.n_items, users[keep], items[keep], device=self.graph_device
        )

    def build_views(self, epoch: int) -> tuple[list[Tensor], list[Tensor]]:
        """The two views' per-layer adjacencies for `epoch` (deterministic in seed and epoch)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * (epoch + 1))
        layers = self.encoder.layers
        views: list[list[Tensor]] = []
        for _ in range(2):
            if self.opts.augmentation == "rw":
                views.append([self._subgraph(gen) for _ in range(layers)])
            else:
                views.append([self._subgraph(gen)] * layers)
        return views[0], views[1]

    def rec_and_contrast(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        epoch = int(batch.get("epoch", 0))
        if self.views is None or self.views_epoch != epoch:
            self.views, self.views_epoch = self.build_views(epoch), epoch
        users, items = self.forward()
        view1 = self.encoder(self.views[0], include_ego=self.include_ego)
        view2 = self.encoder(self.views[1], include_ego=self.include_ego)
        return users, items, self.contrast(view1, view2, batch)


def uniform_noise_hook(eps: float) -> LayerHook:
    """SimGCL's perturbation: e + ε · sign(e) ⊙ normalize(U(0, 1)) on every layer's output."""

    def hook(layer: int, x: Tensor) -> Tensor:
        noise = F.normalize(torch.rand_like(x), dim=-1)
        return x + torch.sign(x) * noise * eps

    return hook


@register_method("simgcl", options=SimGCLOptions, tasks=("recsys",), paper="Yu et al. 2022, arXiv:2112.08679")
class SimGCL(_Contrastive):
    """SimGCL: InfoNCE between two views made by uniform noise on every propagation layer.

    No graph augmentation; the noise has magnitude ε; BPR uses the clean embeddings.

    Batch: BPR triples ``{"users", "pos", "neg"}`` (long (B,)) and ``"epoch"``, as
    :class:`GraphRecommender` describes.
    """

    include_ego = False
    Options = SimGCLOptions
    opts: SimGCLOptions

    def rec_and_contrast(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        users, items = self.forward()
        hook = uniform_noise_hook(self.opts.noise_eps)
        view1 = self.encoder(self.adj, hook, include_ego=False)
        view2 = self.encoder(self.adj, hook, include_ego=False)
        return users, items, self.contrast(view1, view2, batch)


@register_method("xsimgcl", options=XSimGCLOptions, tasks=("recsys",), paper="Yu et al. 2023, arXiv:2209.02544")
class XSimGCL(_Contrastive):
    """XSimGCL: one noisy propagation, its final embeddings contrasted with one of its layers.

    The final (layer-mean) embeddings serve BPR and are contrasted with the noisy layer-l*
    embeddings (cross-layer contrast).

    Batch: BPR triples ``{"users", "pos", "neg"}`` (long (B,)) and ``"epoch"``, as
    :class:`GraphRecommender` describes.
    """

    include_ego = False
    Options = XSimGCLOptions
    opts: XSimGCLOptions

    def rec_and_contrast(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        outs = self.encoder.layer_outputs(self.adj, uniform_noise_hook(self.opts.noise_eps))
        users, items = self.encoder.combine(outs, include_ego=False)
        layer = outs[self.opts.cl_layer]
        cl_view = (layer[: self.n_users], layer[self.n_users :])
        return users, items, self.contrast((users, items), cl_view, batch)
