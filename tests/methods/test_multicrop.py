"""Multi-crop: views of several sizes, global views first. The contract (global_view_count,
encode_views), SimCLR / SupCon's multi-positive InfoNCE over all views and BYOL's pairs against
naive loops written here, the two-view methods' refusal, and a tiny digits run whose loss falls."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.methods import BYOL, SimCLR, SupCon
from contrastkit.methods.base import check_views, encode_views, global_view_count
from contrastkit.recipes import load_config
from contrastkit.runner import train_run
from contrastkit.runs import new_run_dir

from ..conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")

N = 5  # images per batch


def _encoder() -> nn.Module:
    """Any input size → 8 features (a conv, then pooled to 2 x 2)."""
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())


def _views(seed: int = 0) -> list[Tensor]:
    """Two global 6 x 6 views and three local 3 x 3 views of N images."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N, 1, 6, 6, generator=g) for _ in range(2)] + [torch.randn(N, 1, 3, 3, generator=g) for _ in range(3)]


class _Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.shapes = inner, []  # type: ignore[var-annotated]

    def forward(self, x: Tensor) -> Tensor:
        self.shapes.append(tuple(x.shape))
        out: Tensor = self.inner(x)
        return out


def test_encode_views_one_call_per_size_and_global_view_count() -> None:
    torch.manual_seed(0)
    enc = _Counting(_encoder()).eval()
    views = _views()
    out = encode_views(enc, views)
    assert enc.shapes == [(2 * N, 1, 6, 6), (3 * N, 1, 3, 3)]  # one call per run of same-size views
    assert len(out) == 5
    for x, y in zip(views, out, strict=True):
        torch.testing.assert_close(y, enc.inner(x))
    assert global_view_count({"views": views, "global_views": 2}) == 2
    assert global_view_count({"views": views}) == 5  # no key: every view is global


def _naive_multi_positive(z: Tensor, labels: list[int], tau: float) -> Tensor:
    """SupCon L_out over all rows: each row against every other row; positives = other rows
    with its label; the mean over positives of -log softmax, then over rows."""
    z = F.normalize(z, dim=1)
    total = torch.zeros(())
    for a in range(z.shape[0]):
        others = [b for b in range(z.shape[0]) if b != a]
        log_den = torch.logsumexp(torch.stack([z[a] @ z[b] / tau for b in others]), dim=0)
        positives = [b for b in others if labels[b] == labels[a]]
        total = total + sum(-(z[a] @ z[b] / tau - log_den) for b in positives) / len(positives)
    return total / z.shape[0]


@pytest.mark.parametrize("method", ["simclr", "supcon"])
def test_contrastive_multicrop_loss_is_every_view_against_all_others(method: str) -> None:
    torch.manual_seed(0)
    head = {"projection_dim": 4, "projection_hidden_dim": 6, "temperature": 0.3}
    model = (SimCLR if method == "simclr" else SupCon)(_encoder(), 8, **head).eval()
    views = _views()
    batch: dict[str, object] = {"views": views, "global_views": 2}
    classes = [0, 1, 0, -1, 2]  # SupCon: images 0 and 2 share a class; -1: its own
    if method == "supcon":
        batch["labels"] = torch.tensor(classes)
    loss = model.training_step(batch).loss
    z = torch.cat([model.projector(model.encoder(x)) for x in views])  # view by view
    if method == "simclr":
        per_image = list(range(N))
    else:
        per_image = [c if c >= 0 else 100 + i for i, c in enumerate(classes)]
    ref = _naive_multi_positive(z, per_image * len(views), 0.3)
    torch.testing.assert_close(loss, ref)
    # the gradients agree too
    loss.backward()
    got = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    z = torch.cat([model.projector(model.encoder(x)) for x in views])
    _naive_multi_positive(z, per_image * len(views), 0.3).backward()
    for a, b in zip(got, [p.grad for p in model.parameters() if p.grad is not None], strict=True):
        torch.testing.assert_close(a, b)


def test_byol_multicrop_loss_is_every_view_against_every_other_global_target() -> None:
    torch.manual_seed(0)
    model = BYOL(_encoder(), 8, projection_dim=4, projection_hidden_dim=6, predictor_hidden_dim=5).eval()
    with torch.no_grad():  # a target that differs from the online network
        for p in model.target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    views = _views()
    loss = model.training_step({"views": views, "global_views": 2}).loss
    terms = []
    for i, x in enumerate(views):  # online view i ...
        p = model.predictor(model.projector(model.encoder(x)))
        for j in range(2):  # ... against the target of each global view j other than itself
            if i == j:
                continue
            with torch.no_grad():
                t = model.target.target(views[j])
            terms.append(sum(2 - 2 * (p[b] @ t[b]) / (p[b].norm() * t[b].norm()) for b in range(N)) / N)
    assert len(terms) == 5 * 2 - 2
    torch.testing.assert_close(loss, 2 * sum(terms) / len(terms))  # two views: BYOL's symmetrised sum
    loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    # two views: the loss of the paper, l(p1, t2) + l(p2, t1)
    two = model.training_step({"views": views[:2]}).loss
    p1, p2 = (model.predictor(model.projector(model.encoder(x))) for x in views[:2])
    t1, t2 = (model.target.target(x) for x in views[:2])
    ref = sum((2 - 2 * F.cosine_similarity(p, t, dim=1)).mean() for p, t in ((p1, t2), (p2, t1)))
    torch.testing.assert_close(two, ref)


def test_two_view_methods_refuse_more_views_in_one_line() -> None:
    check_views("moco_v2", 2)
    check_views("simclr", 8, 2)
    for method in ("moco_v2", "moco_v3", "simsiam", "barlow_twins", "vicreg"):
        with pytest.raises(UserError) as info:
            check_views(method, 8, 2)
        message = str(info.value)
        assert message.startswith(f"method {method} trains on exactly 2 views of one size and data.crops gives 8 views")
        assert "byol, dino, nnclr, simclr, supcon, swav" in message and "\n" not in message
    crops = "data.crops=[{count: 2, size: 8, scale: [0.5, 1]}, {count: 2, size: 4, scale: [0.2, 0.5]}]"
    with pytest.raises(UserError, match=r"^method simsiam trains on exactly 2 views of one size and data\.crops gives 4 views"):
        load_config("digits-simsiam", [crops])
    with pytest.raises(UserError, match=r"^method vicreg trains on exactly 2 views of one size and the recipe gives 3 views"):
        load_config("digits-vicreg", ["data.views=3"])


def test_multicrop_simclr_learns_on_digits(tmp_path: Path) -> None:
    """Two global 8 x 8 crops and four local 4 x 4 crops of each digit: the loss falls and the
    embeddings keep their spread."""
    crops = "[{count: 2, size: 8, scale: [0.5, 1.0]}, {count: 4, size: 4, scale: [0.15, 0.4]}]"
    cfg = load_config("digits-simclr", tiny_overrides(**{
        "data.crops": crops, "train.max_steps": 20, "train.checkpoint_every": 1000, "optim.lr": 0.004,
        "train.num_threads": 1, "eval.enabled": False,
    }))
    run = new_run_dir(cfg, str(tmp_path / "run"), resume=False)
    train_run(cfg, run, progress=False, verbose=False)
    rows = list(csv.DictReader((run / "train_log.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert math.log(6 * 64 - 1) - 0.5 < losses[0]  # about chance: 6 views x 64 images
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.2, (first, last)
    assert float(rows[-1]["emb_std"]) > 0.2 and float(rows[-1]["eff_rank"]) > 2.0, rows[-1]  # no collapse
