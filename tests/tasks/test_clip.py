"""CLIP and SigLIP: losses against closed forms and naive loops, the two-tower method, and
GradCache on two towers with a learnable temperature (no transformers needed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.losses import info_nce
from contrastkit.losses.siglip import SigLIPLoss, siglip_loss
from contrastkit.methods.clip import CLIP, CLIPOptions, SigLIPOptions, clip_loss


def _naive_clip(x: Tensor, y: Tensor, scale: float) -> Tensor:
    """Radford et al. 2021, Figure 3 pseudo-code, one row at a time."""
    x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    n = x.shape[0]
    total = x.new_zeros(())
    for i in range(n):
        row = torch.stack([scale * (x[i] @ y[j]) for j in range(n)])
        col = torch.stack([scale * (y[i] @ x[j]) for j in range(n)])
        total = total - torch.log_softmax(row, 0)[i] - torch.log_softmax(col, 0)[i]
    return total / (2 * n)


def test_clip_loss_matches_the_closed_form_and_the_kernel() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    s = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    loss = clip_loss(x, y, s)
    assert torch.allclose(loss, _naive_clip(x, y, 1 / 0.07))
    logits = F.normalize(x, dim=1) @ F.normalize(y, dim=1).T / 0.07
    target = torch.arange(7)
    closed = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert torch.allclose(loss, closed)
    kernel = (info_nce(x, y, temperature=0.07) + info_nce(y, x, temperature=0.07)) / 2
    assert torch.allclose(loss, kernel)
    # the learnable scale gets the analytic gradient d loss / d s = d loss / d logits · logits
    loss.backward()
    logits_leaf = logits.detach().requires_grad_(True)
    ((F.cross_entropy(logits_leaf, target) + F.cross_entropy(logits_leaf.T, target)) / 2).backward()
    assert s.grad is not None
    assert torch.allclose(s.grad, (logits_leaf.grad * logits_leaf.detach()).sum())


def test_clip_scale_is_clamped_at_100() -> None:
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(clip_loss(x, y, torch.tensor(10.0, dtype=torch.float64)), _naive_clip(x, y, 100.0))


def test_clip_loss_with_repeated_captions_counts_them_as_positives() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    s = torch.tensor(math.log(10.0), dtype=torch.float64)
    logits = 10.0 * F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    same = labels[:, None] == labels[None, :]

    def multi(lg: Tensor) -> Tensor:
        logp = torch.log_softmax(lg, 1)
        return -(logp * same).sum(1).div(same.sum(1)).mean()

    assert torch.allclose(clip_loss(x, y, s, labels=labels), (multi(logits) + multi(logits.T)) / 2)


def _naive_siglip(x: Tensor, y: Tensor, t: float, b: float, labels: Tensor | None = None) -> Tensor:
    x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            positive = (i == j) if labels is None else bool(labels[i] == labels[j])
            z = 1.0 if positive else -1.0
            total += -math.log(1.0 / (1.0 + math.exp(-z * (t * float(x[i] @ y[j]) + b))))
    return torch.tensor(total / n, dtype=torch.float64)


def test_siglip_matches_a_naive_loop() -> None:
    torch.manual_seed(2)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    assert torch.allclose(siglip_loss(x, y, 10.0, -10.0), _naive_siglip(x, y, 10.0, -10.0))
    assert torch.allclose(siglip_loss(x, y, 3.0, 0.5), _naive_siglip(x, y, 3.0, 0.5))
    labels = torch.tensor([0, 1, 1, 2, 0, 3])
    assert torch.allclose(siglip_loss(x, y, 5.0, -2.0, labels=labels), _naive_siglip(x, y, 5.0, -2.0, labels))
    per_row = siglip_loss(x, y, 10.0, -10.0, reduction="none")
    assert per_row.shape == (6,) and torch.allclose(per_row.sum() / 6, siglip_loss(x, y, 10.0, -10.0))
    with pytest.raises(UserError, match="equal shape"):
        siglip_loss(x, y[:3], 1.0, 0.0)


def test_siglip_module_learns_scale_and_bias() -> None:
    torch.manual_seed(3)
    mod = SigLIPLoss(10.0, -10.0).double()
    assert torch.allclose(mod.log_scale.exp(), torch.tensor(10.0, dtype=torch.float64))
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    loss = mod(x, y)
    assert torch.allclose(loss, _naive_siglip(x, y, 10.0, -10.0))
    loss.backward()
    assert mod.log_scale.grad is not None and mod.bias.grad is not None
    # with bias -10, all pairs look negative: the loss pushes the bias up
    assert float(mod.bias.grad) < 0


class _Bag(nn.Module):
    """A tiny text tower: mean of token embeddings (ids, mask) → (B, out_dim), with dropout."""

    def __init__(self, vocab: int = 50, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.drop = nn.Dropout(0.2)
        self.out_dim = dim

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        m = mask.unsqueeze(-1).to(self.emb.weight.dtype)
        return self.drop((self.emb(ids) * m).sum(1) / m.sum(1).clamp_min(1))


class _Img(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, dim), nn.Dropout(0.2), nn.Tanh())
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def _batch(n: int = 12) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "views": [torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)],
        "input_ids": torch.randint(1, 50, (n, 6), generator=g),
        "attention_mask": (torch.rand(n, 6, generator=g) > 0.2).long(),
        "caption_ids": torch.tensor([i % 9 for i in range(n)]),
    }


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_clip_gradcache_gradients_equal_the_uncached_ones(loss_name: str) -> None:
    torch.manual_seed(0)
    options = CLIPOptions(embed_dim=6) if loss_name == "clip" else SigLIPOptions(embed_dim=6)
    model = CLIP(_Img(), _Bag(), options).double()
    batch = _batch()

    def grads(chunk: int | None, seed: int) -> tuple[float, dict[str, Tensor]]:
        model.gradcache_chunk = chunk
        model.zero_grad()
        torch.manual_seed(seed)
        out = model.training_step(batch)
        out.loss.backward()
        return float(out.loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.eval()  # no dropout: GradCache must equal the full-batch loss exactly
    full_loss, full = grads(None, 0)
    cached_loss, cached = grads(5, 0)
    assert full_loss == pytest.approx(cached_loss, rel=1e-12)
    assert set(full) == set(cached)
    scale_name = "logit_scale" if loss_name == "clip" else "siglip.bias"
    assert scale_name in cached
    for name in full:
        assert torch.allclose(full[name], cached[name], atol=1e-12), name
    model.train()  # with dropout: the replayed masks must be the ones of the first pass
    _, cached = grads(5, 7)
    model.zero_grad()
    torch.manual_seed(7)
    chunks_i = [model.embed_images(batch["views"][0][i : i + 5]) for i in range(0, 12, 5)]
    chunks_t = [
        model.embed_texts(batch["input_ids"][i : i + 5], batch["attention_mask"][i : i + 5]) for i in range(0, 12, 5)
    ]
    model.loss_from_embeddings(torch.cat(chunks_i), torch.cat(chunks_t), batch["caption_ids"]).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(p.grad, cached[name], atol=1e-12), name


@pytest.mark.usefixtures("one_thread")
def test_clip_learns_to_align_two_views_of_toy_data() -> None:
    torch.manual_seed(0)
    model = CLIP(_Img(), _Bag(), embed_dim=6)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(1)
    classes = torch.randint(0, 8, (400,), generator=g)
    protos = torch.randn(8, 1, 4, 4, generator=g)
    losses = []
    for step in range(60):
        idx = torch.randint(0, 400, (32,), generator=g)
        c = classes[idx]
        batch = {
            "views": [protos[c] + 0.3 * torch.randn(32, 1, 4, 4, generator=g)],
            "input_ids": torch.stack([c + 1, c + 10, c + 20], 1),
            "attention_mask": torch.ones(32, 3, dtype=torch.long),
            "caption_ids": c,
        }
        out = model.training_step(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.on_step_end(step, 60)
        losses.append(float(out.loss.detach()))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert set(out.logs) == {"loss", "scale"} and all(isinstance(v, Tensor) for v in out.logs.values())
    assert out.diagnostics is not None  # the retrieval accuracy: computed on logged steps only
    accuracy = out.diagnostics()
    assert accuracy["i2t_acc"] > 0.9 and accuracy["t2i_acc"] > 0.9
    assert float(model.logit_scale.detach()) <= math.log(100.0) + 1e-6


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One of two gloo processes: the losses on this rank's half of a fixed batch."""
    import torch.distributed as dist

    from contrastkit.methods.simcse import SimCSE

    torch.set_num_threads(1)  # a forked child: no OpenMP pool of the parent's
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        x, y, z = (torch.randn(8, 5, dtype=torch.float64) for _ in range(3))
        labels = torch.tensor([0, 1, 2, 0, 3, 1, 4, 5])
        rows = slice(4 * rank, 4 * rank + 4)
        results: dict[str, Tensor] = {}
        for name in ("clip", "clip_labels", "siglip", "simcse"):
            xl = x[rows].clone().requires_grad_(True)
            yl = y[rows].clone().requires_grad_(True)
            zl = z[rows].clone().requires_grad_(True)
            s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
            if name == "clip":
                loss = clip_loss(xl, yl, s)
            elif name == "clip_labels":
                loss = clip_loss(xl, yl, s, labels=labels[rows])
            elif name == "siglip":
                loss = siglip_loss(xl, yl, s.exp(), -1.0, gather_distributed=True)
            else:
                loss = SimCSE(nn.Identity(), temperature=0.1).loss_from_views([xl, yl, zl])
            loss.backward()
            assert xl.grad is not None and yl.grad is not None
            zg = zl.grad if zl.grad is not None else torch.zeros_like(zl)
            sg = s.grad if s.grad is not None else torch.zeros_like(s)
            results[name] = torch.cat([loss.detach()[None], xl.grad.flatten(), yl.grad.flatten(), zg.flatten(), sg[None]])
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_losses_under_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    """Local rows against gathered global keys, with DDP's averaging of gradients over ranks,
    give the single-process loss and gradients of the whole batch. (The two ranks are forked:
    spawned ones would spend seconds importing torch and contrastkit again.)"""
    import torch.multiprocessing as mp

    from contrastkit.methods.simcse import SimCSE

    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    x, y, z = (torch.randn(8, 5, dtype=torch.float64) for _ in range(3))
    labels = torch.tensor([0, 1, 2, 0, 3, 1, 4, 5])
    for name in ("clip", "clip_labels", "siglip", "simcse"):
        xs, ys, zs = (t.clone().requires_grad_(True) for t in (x, y, z))
        s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        if name == "clip":
            loss = clip_loss(xs, ys, s)
        elif name == "clip_labels":
            loss = clip_loss(xs, ys, s, labels=labels)
        elif name == "siglip":
            loss = siglip_loss(xs, ys, s.exp(), -1.0)
        else:
            loss = SimCSE(nn.Identity(), temperature=0.1).loss_from_views([xs, ys, zs])
        loss.backward()
        assert xs.grad is not None and ys.grad is not None
        # DDP averages over the 2 ranks: mean of the rank losses and of their gradients
        mean_loss = (ranks[0][name][0] + ranks[1][name][0]) / 2
        assert torch.allclose(mean_loss, loss.detach()), name
        for r in range(2):
            grads = ranks[r][name][1:] / 2
            n = 4 * 5
            assert torch.allclose(grads[:n], xs.grad[4 * r : 4 * r + 4].flatten()), name
            assert torch.allclose(grads[n : 2 * n], ys.grad[4 * r : 4 * r + 4].flatten()), name
            if zs.grad is not None:
                assert torch.allclose(grads[2 * n : 3 * n], zs.grad[4 * r : 4 * r + 4].flatten()), name
        if s.grad is not None:
            s_mean = (ranks[0][name][-1] + ranks[1][name][-1]) / 2
            assert torch.allclose(s_mean, s.grad), name
