"""Graph encoder, BPR loss and the recommenders' losses (the contrastive term is the kernel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastkit.data.interactions import BPRLoader
from contrastkit.encoders.graph import LightGCNEncoder, normalized_adjacency, propagate
from contrastkit.errors import UserError
from contrastkit.losses import bpr_loss, info_nce
from contrastkit.methods.recsys import SGL, LightGCN, SimGCL, XSimGCL, uniform_noise_hook
from contrastkit.methods.registry import get_method, methods_of_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(n_users: int = 30, n_items: int = 24, per_user: int = 6, seed: int = 0) -> np.ndarray:
    """Two taste groups: users of group g interact with items of group g only."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 2
        items = np.arange(group, n_items, 2)
        for i in rng.choice(items, per_user, replace=False):
            rows.append((u, int(i)))
    return np.asarray(rows, dtype=np.int64)


def test_normalized_adjacency_matches_dense_formula() -> None:
    pairs = _pairs(5, 4, 2)
    adj = normalized_adjacency(5, 4, torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1]))
    a = torch.zeros(9, 9, dtype=torch.float64)
    for u, i in pairs:
        a[u, 5 + i] = a[5 + i, u] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    expected = inv[:, None] * a * inv[None, :]
    torch.testing.assert_close(adj.to_dense().double(), expected, rtol=1e-6, atol=1e-7)


def test_propagation_and_its_gradient_match_dense_matmul() -> None:
    pairs = _pairs(8, 6, 3)
    adj = normalized_adjacency(8, 6, torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1]))
    dense = adj.to_dense()
    x = torch.randn(14, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    w = torch.randn(14, 5)
    out = torch.stack(propagate(adj, x, 3)).mean(0)
    ref = torch.stack([x2, dense @ x2, dense @ (dense @ x2), dense @ (dense @ (dense @ x2))]).mean(0)
    torch.testing.assert_close(out, ref)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_bpr_loss_closed_form_and_gradient() -> None:
    pos = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64, requires_grad=True)
    neg = torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)
    loss = bpr_loss(pos, neg)
    expected = -torch.log(torch.sigmoid(pos.detach() - neg)).mean()
    torch.testing.assert_close(loss, expected)
    assert abs(float(bpr_loss(torch.zeros(4), torch.zeros(4))) - np.log(2)) < 1e-6
    assert torch.autograd.gradcheck(lambda p: bpr_loss(p, neg), (pos,))
    with pytest.raises(UserError, match="same shape"):
        bpr_loss(torch.zeros(3), torch.zeros(4))


def test_noise_hook_adds_eps_norm_in_the_sign_orthant() -> None:
    x = torch.randn(50, 8)
    y = uniform_noise_hook(0.3)(1, x)
    delta = y - x
    torch.testing.assert_close(delta.norm(dim=1), torch.full((50,), 0.3))
    assert bool(((delta * torch.sign(x)) >= 0).all())


def _batch(pairs: np.ndarray, n_items: int, epoch: int = 0) -> dict[str, object]:
    return next(iter(BPRLoader(pairs, n_items, batch_size=64, seed=1).batches(epoch)))


def test_contrastive_term_is_the_infonce_kernel() -> None:
    pairs = _pairs()
    batch = _batch(pairs, 24)
    model = SimGCL(30, 24, pairs, embedding_dim=16, layers=2, cl_weight=0.3, temperature=0.15, noise_eps=0.1)
    torch.manual_seed(3)
    _users, _items, term = model.rec_and_contrast(batch)
    assert term is not None
    # recompute the two noisy views with the same random draws, then call the kernel directly
    torch.manual_seed(3)
    hook = uniform_noise_hook(0.1)
    v1 = model.encoder(model.adj, hook, include_ego=False)
    v2 = model.encoder(model.adj, hook, include_ego=False)
    u = torch.unique(batch["users"])  # type: ignore[arg-type]
    i = torch.unique(batch["pos"])  # type: ignore[arg-type]
    direct = 0.3 * (
        info_nce(v1[0][u], v2[0][u], temperature=0.15, similarity="cosine")
        + info_nce(v1[1][i], v2[1][i], temperature=0.15, similarity="cosine")
    )
    torch.testing.assert_close(term, direct)
    # and the kernel's value is the naive InfoNCE: -log softmax of the diagonal
    a = torch.nn.functional.normalize(v1[0][u], dim=1)
    b = torch.nn.functional.normalize(v2[0][u], dim=1)
    naive = -torch.diag(torch.log_softmax(a @ b.T / 0.15, dim=1)).mean()
    torch.testing.assert_close(info_nce(v1[0][u], v2[0][u], temperature=0.15), naive)


def test_xsimgcl_contrasts_final_with_layer_l() -> None:
    pairs = _pairs()
    batch = _batch(pairs, 24)
    model = XSimGCL(30, 24, pairs, embedding_dim=16, layers=3, cl_weight=0.2, temperature=0.2, noise_eps=0.2, cl_layer=1)
    torch.manual_seed(5)
    users, items, term = model.rec_and_contrast(batch)
    torch.manual_seed(5)
    outs = model.encoder.layer_outputs(model.adj, uniform_noise_hook(0.2))
    fu, fi = model.encoder.combine(outs, include_ego=False)
    torch.testing.assert_close(users, fu)
    torch.testing.assert_close(items, fi)
    u = torch.unique(batch["users"])  # type: ignore[arg-type]
    i = torch.unique(batch["pos"])  # type: ignore[arg-type]
    layer = outs[1]
    direct = 0.2 * (
        info_nce(fu[u], layer[:30][u], temperature=0.2) + info_nce(fi[i], layer[30:][i], temperature=0.2)
    )
    torch.testing.assert_close(term, direct)


@pytest.mark.parametrize("aug", ["nd", "ed", "rw"])
def test_sgl_views_are_subgraphs_redrawn_each_epoch(aug: str) -> None:
    pairs = _pairs()
    model = SGL(30, 24, pairs, embedding_dim=8, layers=2, augmentation=aug, drop_ratio=0.3, seed=0)
    full = model.adj.to_dense()  # type: ignore[union-attr]
    v0 = model.build_views(0)
    again = model.build_views(0)
    v1 = model.build_views(1)
    for layer_adj, same in zip(v0[0], again[0], strict=True):
        sub = layer_adj.to_dense()
        torch.testing.assert_close(sub, same.to_dense())  # deterministic per epoch (exact resume)
        assert bool(((sub > 0) <= (full > 0)).all())  # only edges of the training graph
        assert (sub > 0).sum() < (full > 0).sum()  # some were dropped
        torch.testing.assert_close(sub, sub.T)  # symmetric
    assert not torch.equal(v0[0][0].to_dense(), v1[0][0].to_dense())
    assert not torch.equal(v0[0][0].to_dense(), v0[1][0].to_dense())  # two different views
    if aug == "rw":
        assert not torch.equal(v0[0][0].to_dense(), v0[0][1].to_dense())  # per-layer graphs
    # training_step rebuilds the views when the epoch changes
    model.training_step(_batch(pairs, 24, epoch=0))
    first = model.views
    model.training_step(_batch(pairs, 24, epoch=0))
    assert model.views is first
    model.training_step(_batch(pairs, 24, epoch=1))
    assert model.views is not first and model.views_epoch == 1


@pytest.mark.parametrize("name", sorted(methods_of_task("recsys")))
def test_each_model_learns_the_two_groups(name: str) -> None:
    """Loss falls and held-out same-group items outrank other-group items; no collapse."""
    torch.manual_seed(0)
    pairs = _pairs(per_user=6)
    spec = get_method(name, "recsys")
    kwargs = {} if name in ("mf", "lightgcn") else {"cl_weight": 0.05}
    options = spec.make_options({"embedding_dim": 16, **kwargs})
    model = spec.build(options, n_users=30, n_items=24, train_pairs=pairs)
    assert isinstance(model, torch.nn.Module)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loader = BPRLoader(pairs, 24, batch_size=60, seed=0)
    losses = []
    for epoch in range(40):
        for batch in loader.batches(epoch):
            out = model.training_step(batch)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(float(out.logs["bpr"]))
    assert np.mean(losses[-6:]) < 0.6 * np.mean(losses[:6])
    users, items = model.embeddings()
    scores = users @ items.T
    same = torch.tensor([[(u % 2) == (i % 2) for i in range(24)] for u in range(30)])
    assert float(scores[same].mean()) > float(scores[~same].mean())
    # logs are detached tensors (numbers only on logged steps); collapse statistics are diagnostics
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in out.logs.values())
    assert out.diagnostics is not None and out.diagnostics()["emb_std"] > 0.05


def test_lightgcn_eval_embeddings_have_no_noise() -> None:
    pairs = _pairs()
    for model in (LightGCN(30, 24, pairs, embedding_dim=8), XSimGCL(30, 24, pairs, embedding_dim=8)):
        a = model.embeddings()
        b = model.embeddings()
        torch.testing.assert_close(a[0], b[0])


def test_bad_model_settings() -> None:
    pairs = _pairs()
    with pytest.raises(UserError, match=r"cl_layer must be in \[1, 2\]"):
        XSimGCL(30, 24, pairs, layers=2, cl_layer=3)
    with pytest.raises(UserError, match=r"unknown SGL.augmentation 'xx'"):
        SGL(30, 24, pairs, augmentation="xx")
    with pytest.raises(UserError, match=r"LightGCN has no option noise_eps; its options are: embedding_dim, reg, layers"):
        LightGCN(30, 24, pairs, noise_eps=0.1)
    enc = LightGCNEncoder(3, 4, 8, layers=0)
    u, i = enc(None)
    assert u.shape == (3, 8) and i.shape == (4, 8)
