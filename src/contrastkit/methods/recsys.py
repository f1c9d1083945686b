"""Recommenders trained on implicit feedback: MF-BPR, LightGCN, SGL, SimGCL, XSimGCL.

Each is an nn.Module with `training_step(batch) -> StepOutput` over BPR triples from
`contrastkit.data.interactions.BPRLoader` and `embeddings() -> (users, items)` for scoring
(dot product). The contrastive terms call the one InfoNCE kernel (`contrastkit.losses.info_nce`)
over the unique users and positive items of the batch: view 1 rows are queries, view 2 rows
keys, and a node's positive is itself in the other view. Total loss:
BPR + λ · (InfoNCE_users + InfoNCE_items) + reg · ½‖layer-0 embeddings of the batch‖² / B.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.diagnostics import normalised_std
from contrastkit.encoders.graph import LayerHook, LightGCNEncoder, normalized_adjacency
from contrastkit.errors import UserError, check_choice
from contrastkit.losses import bpr_loss, info_nce
from contrastkit.methods.base import StepOutput

SGL_AUGMENTATIONS = ("nd", "ed", "rw")


class GraphRecommender(nn.Module):
    """Base recommender: BPR on the mean of L LightGCN layers over the training graph.

    Subclasses choose the layers (MF: none) and add a contrastive term.
    """

    include_ego = True  # mean over layers 0..L (False: 1..L)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_pairs: np.ndarray | Tensor,
        *,
        dim: int = 64,
        layers: int = 2,
        reg: float = 1e-4,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.reg = float(reg)
        self.encoder = LightGCNEncoder(self.n_users, self.n_items, dim, layers)
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
        logs = {"bpr": float(bpr.detach())}
        if contrast is not None:
            loss = loss + contrast
            logs["contrast"] = float(contrast.detach())
        logs["loss"] = float(loss.detach())
        logs["emb_std"] = normalised_std(ue[:256].detach())  # collapse check on a cheap sample
        return StepOutput(loss=loss, logs=logs)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """No momentum encoder or schedule of its own."""


class MFBPR(GraphRecommender):
    """Matrix factorisation trained with BPR (Rendle et al. 2009, arXiv:1205.2618): no graph."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_pairs: np.ndarray | Tensor,
        *,
        dim: int = 64,
        layers: int = 0,
        reg: float = 1e-4,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(n_users, n_items, train_pairs, dim=dim, layers=0, reg=reg, device=device)


class LightGCN(GraphRecommender):
    """LightGCN (He et al. 2020, arXiv:2002.02126): BPR on the mean of layers 0..L of
    parameter-free neighbourhood averaging over the normalised user–item graph."""


class _Contrastive(GraphRecommender):
    """Shared InfoNCE term over two views of the unique users and positive items of a batch."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_pairs: np.ndarray | Tensor,
        *,
        dim: int = 64,
        layers: int = 2,
        reg: float = 1e-4,
        cl_weight: float = 0.1,
        temperature: float = 0.2,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(n_users, n_items, train_pairs, dim=dim, layers=layers, reg=reg, device=device)
        if temperature <= 0:
            raise UserError(f"recsys.cl_temperature must be > 0, got {temperature}")
        self.cl_weight = float(cl_weight)
        self.temperature = float(temperature)

    def contrast(
        self,
        view1: tuple[Tensor, Tensor],
        view2: tuple[Tensor, Tensor],
        batch: dict[str, Any],
    ) -> Tensor:
        """λ · (InfoNCE over unique batch users + InfoNCE over unique positive items)."""
        u = torch.unique(batch["users"])
        i = torch.unique(batch["pos"])
        user_term = info_nce(view1[0][u], view2[0][u], temperature=self.temperature, similarity="cosine")
        item_term = info_nce(view1[1][i], view2[1][i], temperature=self.temperature, similarity="cosine")
        return self.cl_weight * (user_term + item_term)


class SGL(_Contrastive):
    """Self-supervised graph learning (Wu et al. 2021, arXiv:2010.10783).

    Two stochastic subgraphs of the training graph, redrawn at the start of every epoch
    (seeded by the epoch, so resumes are exact): node dropout (nd), edge dropout (ed) or random
    walk (rw: a different edge-dropped graph per layer). The BPR term uses the full graph.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_pairs: np.ndarray | Tensor,
        *,
        dim: int = 64,
        layers: int = 2,
        reg: float = 1e-4,
        cl_weight: float = 0.1,
        temperature: float = 0.2,
        augmentation: str = "ed",
        drop_ratio: float = 0.1,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(
            n_users, n_items, train_pairs, dim=dim, layers=layers, reg=reg,
            cl_weight=cl_weight, temperature=temperature, device=device,
        )
        check_choice("recsys.sgl_augmentation", augmentation, SGL_AUGMENTATIONS)
        if not 0 <= drop_ratio < 1:
            raise UserError(f"recsys.sgl_drop_ratio must be in [0, 1), got {drop_ratio}")
        if layers < 1:
            raise UserError("SGL needs recsys.layers >= 1 (its views are graph perturbations)")
        self.augmentation = augmentation
        self.drop_ratio = float(drop_ratio)
        self.seed = int(seed)
        self.views: tuple[list[Tensor], list[Tensor]] | None = None
        self.views_epoch: int | None = None

    def _subgraph(self, gen: torch.Generator) -> Tensor:
        keep_ratio = 1.0 - self.drop_ratio
        users, items = self.train_users, self.train_items
        if self.augmentation == "nd":
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
            if self.augmentation == "rw":
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


class SimGCL(_Contrastive):
    """SimGCL (Yu et al. 2022, arXiv:2112.08679): two views from uniform noise of magnitude ε
    added to every propagation layer; no graph augmentation. BPR uses the clean embeddings."""

    include_ego = False

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_pairs: np.ndarray | Tensor,
        *,
        dim: int = 64,
        layers: int = 2,
        reg: float = 1e-4,
        cl_weight: float = 0.2,
        temperature: float = 0.2,
        eps: float = 0.1,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(
            n_users, n_items, train_pairs, dim=dim, layers=layers, reg=reg,
            cl_weight=cl_weight, temperature=temperature, device=device,
        )
        if layers < 1:
            raise UserError("SimGCL needs recsys.layers >= 1 (noise is added to each layer)")
        if eps < 0:
            raise UserError(f"recsys.noise_eps must be >= 0, got {eps}")
        self.eps = float(eps)

    def rec_and_contrast(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        users, items = self.forward()
        hook = uniform_noise_hook(self.eps)
        view1 = self.encoder(self.adj, hook, include_ego=False)
        view2 = self.encoder(self.adj, hook, include_ego=False)
        return users, items, self.contrast(view1, view2, batch)


class XSimGCL(_Contrastive):
    """XSimGCL (Yu et al. 2023, arXiv:2209.02544): one noisy propagation; the final (layer-mean)
    embeddings serve BPR and are contrasted with the noisy layer-l* embeddings (cross-layer)."""

    include_ego = False

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_pairs: np.ndarray | Tensor,
        *,
        dim: int = 64,
        layers: int = 2,
        reg: float = 1e-4,
        cl_weight: float = 0.2,
        temperature: float = 0.2,
        eps: float = 0.2,
        cl_layer: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(
            n_users, n_items, train_pairs, dim=dim, layers=layers, reg=reg,
            cl_weight=cl_weight, temperature=temperature, device=device,
        )
        if layers < 1:
            raise UserError("XSimGCL needs recsys.layers >= 1 (noise is added to each layer)")
        if not 1 <= cl_layer <= layers:
            raise UserError(f"recsys.cl_layer must be in [1, {layers}] (recsys.layers), got {cl_layer}")
        if eps < 0:
            raise UserError(f"recsys.noise_eps must be >= 0, got {eps}")
        self.eps = float(eps)
        self.cl_layer = int(cl_layer)

    def rec_and_contrast(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
        outs = self.encoder.layer_outputs(self.adj, uniform_noise_hook(self.eps))
        users, items = self.encoder.combine(outs, include_ego=False)
        layer = outs[self.cl_layer]
        cl_view = (layer[: self.n_users], layer[self.n_users :])
        return users, items, self.contrast((users, items), cl_view, batch)


RECOMMENDERS: dict[str, type[GraphRecommender]] = {
    "mf": MFBPR,
    "lightgcn": LightGCN,
    "sgl": SGL,
    "simgcl": SimGCL,
    "xsimgcl": XSimGCL,
}
