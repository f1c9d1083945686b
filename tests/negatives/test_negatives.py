"""Negative strategies of the InfoNCE kernel against a naive per-anchor loop (loss and gradients),
the published formulas, their limits (each reduces to plain InfoNCE), schedules, config and
the SimCLR wiring."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from contrastkit.errors import UserError
from contrastkit.losses import info_nce
from contrastkit.methods import SimCLR
from contrastkit.methods.base import build_image_method
from contrastkit.negatives import NegativeSampling, negative_sampling_from_config
from contrastkit.recipes import load_config

from ..conftest import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: a second thread only spins


def _sim(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return (a @ b) / (a.norm() * b.norm())
    if metric == "dot":
        return a @ b
    return -(a - b).norm()


def reference(
    queries: torch.Tensor,
    keys: torch.Tensor | None,
    positive: torch.Tensor,
    t: float,
    strategy: NegativeSampling | None,
    *,
    metric: str = "cosine",
    negative_keys: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over anchors with a positive of the strategy's loss, one anchor at a time (float64,
    differentiable): -mean_p s_p + log(w_P·Σ_P e^{s_p} + Ng), Ng from the selected / weighted /
    importance-weighted / debiased negatives."""
    s = strategy or NegativeSampling()
    self_keys = keys is None
    k = queries if keys is None else keys
    all_keys = k if negative_keys is None else torch.cat([k, negative_keys])
    m = k.shape[0]
    losses = []
    for i in range(queries.shape[0]):
        sims = [_sim(queries[i], all_keys[a], metric) for a in range(all_keys.shape[0])]
        pos = [p for p in range(m) if bool(positive[i, p]) and not (self_keys and p == i)]
        negs = [
            a
            for a in range(all_keys.shape[0])
            if not (self_keys and a == i)
            and a not in pos
            and (weights is None or float(weights[i, a].detach()) > 0)
        ]
        if not pos:
            continue
        w = {a: (1.0 if weights is None else weights[i, a]) for a in negs}
        factor = {a: 1.0 for a in negs}
        if s.kind in ("hard_topk", "threshold", "margin") and s.strength > 0:
            if s.kind == "hard_topk":
                ranked = sorted(negs, key=lambda a: -float(sims[a].detach()))
                kept = set(ranked[: s.k])
            elif s.kind == "threshold":
                kept = {a for a in negs if float(sims[a].detach()) >= s.threshold}
            else:
                mean_pos = sum(float(sims[p].detach()) for p in pos) / len(pos)
                kept = {a for a in negs if float(sims[a].detach()) >= mean_pos - s.margin}
            factor = {a: (1.0 if a in kept else 1.0 - s.strength) for a in negs}
        beta = s.beta * s.strength if s.kind == "hard_weighting" else 0.0
        tau = s.tau_plus * s.strength if s.kind in ("hard_weighting", "debiased") else 0.0
        pos_weight = 1.0 - s.strength if s.kind == "decoupled" else 1.0
        exp = {a: torch.exp(sims[a] / t) for a in range(all_keys.shape[0])}
        if beta > 0:  # importance weights exp(β s/t) normalised to mean 1 over the negatives
            imp = {a: torch.exp(beta * sims[a] / t) for a in negs}
            mean_imp = sum(imp.values()) / len(negs)
            neg_mass = sum(w[a] * imp[a] / mean_imp * exp[a] for a in negs)
        else:
            neg_mass = sum(w[a] * factor[a] * exp[a] for a in negs)
        if tau > 0:
            n = len(negs)
            pos_mean = sum(exp[p] for p in pos) / len(pos)
            estimate = (neg_mass - tau * n * pos_mean) / (1 - tau)
            neg_mass = torch.clamp(estimate, min=n * math.exp(-1 / t))
        denom = pos_weight * sum(exp[p] for p in pos) + neg_mass
        losses.append(sum(-sims[p] / t + torch.log(denom) for p in pos) / len(pos))
    if not losses:
        return queries.sum() * 0.0
    return torch.stack(losses).mean()


STRATEGIES = {
    "hard_topk": NegativeSampling("hard_topk", k=3),
    "hard_topk_half": NegativeSampling("hard_topk", k=4, strength=0.5),
    "threshold": NegativeSampling("threshold", threshold=0.1),
    "margin": NegativeSampling("margin", margin=0.3),
    "hard_weighting": NegativeSampling("hard_weighting", beta=1.0, tau_plus=0.1),
    "hard_weighting_only": NegativeSampling("hard_weighting", beta=0.5, tau_plus=0.0),
    "debiased": NegativeSampling("debiased", tau_plus=0.1),
    "debiased_clamped": NegativeSampling("debiased", tau_plus=0.9),
    "decoupled": NegativeSampling("decoupled"),
    "decoupled_half": NegativeSampling("decoupled", strength=0.5),
}


def _data(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = 10
    return {
        "z": torch.randn(n, 4, generator=g, dtype=torch.float64),
        "k": torch.randn(n, 4, generator=g, dtype=torch.float64),
        "neg": torch.randn(5, 4, generator=g, dtype=torch.float64),
        "w": torch.rand(n, n + 5, generator=g, dtype=torch.float64) + 0.2,
        "labels": torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 4]),
        "index": (torch.arange(n) + n // 2) % n,
    }


def _check(got: torch.Tensor, want: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    g_got = torch.autograd.grad(got, inputs, retain_graph=True, allow_unused=True)
    g_want = torch.autograd.grad(want, inputs, retain_graph=True, allow_unused=True)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_matches_loop_simclr_pairs(name: str) -> None:
    s = STRATEGIES[name]
    x = _data(1)
    z = x["z"].requires_grad_()
    pos = F.one_hot(x["index"], 10).bool()
    got = info_nce(z, positive_index=x["index"], temperature=0.5, negatives=s)
    _check(got, reference(z, None, pos, 0.5, s), [z])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_matches_loop_multi_positive_queue_weights(name: str) -> None:
    s = STRATEGIES[name]
    x = _data(2)
    z, neg, w = (x[k].requires_grad_() for k in ("z", "neg", "w"))
    labels = x["labels"]
    pos = labels[:, None] == labels[None, :]
    got = info_nce(z, labels=labels, negative_keys=neg, negative_weights=w, temperature=0.3, negatives=s)
    _check(got, reference(z, None, pos, 0.3, s, negative_keys=neg, weights=w), [z, neg, w])


@pytest.mark.parametrize("name", ["hard_topk", "margin", "hard_weighting", "debiased", "decoupled"])
@pytest.mark.parametrize("metric", ["dot", "neg_euclidean"])
def test_strategy_with_separate_keys_and_other_metrics(name: str, metric: str) -> None:
    s = STRATEGIES[name]
    if name == "margin" and metric == "neg_euclidean":
        s = replace(s, margin=1.0)
    x = _data(3)
    q, k = x["z"].requires_grad_(), x["k"].requires_grad_()
    mask = torch.eye(10, dtype=torch.bool)
    mask[0, 3] = True  # a second positive for one anchor
    got = info_nce(q, k, positive_mask=mask, similarity=metric, temperature=2.0, negatives=s)
    _check(got, reference(q, k, mask, 2.0, s, metric=metric), [q, k])


def test_published_formulas_for_one_positive() -> None:
    """Chuang et al.'s and Robinson et al.'s vectorised reference code, and DCL, on 2N rows."""
    x = _data(4)
    z = F.normalize(x["z"], dim=1)
    n2 = z.shape[0]
    t, tau, beta = 0.5, 0.1, 1.0
    index = x["index"]
    exp = torch.exp(z @ z.T / t)
    pos = exp[torch.arange(n2), index]
    neg_mask = ~torch.eye(n2, dtype=torch.bool) & ~F.one_hot(index, n2).bool()
    neg = exp[neg_mask].view(n2, n2 - 2)
    big_n = n2 - 2
    ng = torch.clamp((-tau * big_n * pos + neg.sum(1)) / (1 - tau), min=big_n * math.e ** (-1 / t))
    debiased = (-torch.log(pos / (pos + ng))).mean()
    imp = (beta * neg.log()).exp()
    reweight = (imp * neg).sum(1) / imp.mean(1)
    ng_hard = torch.clamp((-tau * big_n * pos + reweight) / (1 - tau), min=big_n * math.e ** (-1 / t))
    hard = (-torch.log(pos / (pos + ng_hard))).mean()
    decoupled = (-torch.log(pos) + torch.log(neg.sum(1))).mean()
    kw = {"positive_index": index, "temperature": t}
    torch.testing.assert_close(info_nce(z, **kw, negatives=NegativeSampling("debiased", tau_plus=tau)), debiased)
    torch.testing.assert_close(
        info_nce(z, **kw, negatives=NegativeSampling("hard_weighting", beta=beta, tau_plus=tau)), hard
    )
    torch.testing.assert_close(info_nce(z, **kw, negatives=NegativeSampling("decoupled")), decoupled)


@pytest.mark.parametrize(
    "s",
    [
        NegativeSampling("hard_topk", k=1000),
        NegativeSampling("threshold", threshold=-1.0),
        NegativeSampling("margin", margin=3.0),
        NegativeSampling("hard_weighting", beta=0.0, tau_plus=0.0),
        NegativeSampling("debiased", tau_plus=0.0),
        NegativeSampling("decoupled", strength=0.0),
        NegativeSampling("hard_topk", k=1, strength=0.0),
    ],
)
def test_limits_reduce_to_plain_info_nce(s: NegativeSampling) -> None:
    x = _data(5)
    z = x["z"].float()
    labels = x["labels"]
    plain = info_nce(z, labels=labels, negative_keys=x["neg"].float(), temperature=0.2)
    got = info_nce(z, labels=labels, negative_keys=x["neg"].float(), temperature=0.2, negatives=s)
    torch.testing.assert_close(got, plain)


def test_hard_strategies_weigh_hard_negatives_more() -> None:
    # the hardest negative's share of the gradient grows under hard top-k and hard weighting
    x = _data(6)
    z = x["z"].float().requires_grad_()
    index = x["index"]
    grads = {}
    for name, s in {
        "uniform": None,
        "topk": NegativeSampling("hard_topk", k=2),
        "weight": NegativeSampling("hard_weighting", beta=3.0, tau_plus=0.0),
    }.items():
        loss = info_nce(z, positive_index=index, temperature=0.5, negatives=s)
        (grads[name],) = torch.autograd.grad(loss, z)
    base = grads["uniform"].norm()
    assert not torch.allclose(grads["topk"], grads["uniform"])
    assert not torch.allclose(grads["weight"], grads["uniform"])
    assert torch.isfinite(grads["topk"]).all() and grads["topk"].norm() > 0.1 * base


def test_strategies_chunk_over_rows_exactly() -> None:
    x = _data(7)
    for s in STRATEGIES.values():
        z = x["z"].clone().requires_grad_()
        full = info_nce(z, labels=x["labels"], negative_keys=x["neg"], negatives=s, chunk_size=None)
        (g_full,) = torch.autograd.grad(full, z)
        chunked = info_nce(z, labels=x["labels"], negative_keys=x["neg"], negatives=s, chunk_size=3)
        (g_chunk,) = torch.autograd.grad(chunked, z)
        torch.testing.assert_close(chunked, full)
        torch.testing.assert_close(g_chunk, g_full)


def test_schedules() -> None:
    lin = NegativeSampling("hard_weighting", beta=2.0, schedule="linear", warmup_fraction=0.2)
    assert lin.hardness(0.1) == 0.0 and lin.at(0.1).is_uniform
    assert lin.hardness(0.6) == pytest.approx(0.5)
    assert lin.at(0.6).strength == pytest.approx(0.5) and lin.at(0.6).resolved
    assert lin.at(1.0).strength == 1.0 and lin.at(5.0).strength == 1.0
    cos = NegativeSampling("hard_topk", k=4, schedule="cosine")
    assert [round(cos.hardness(p), 6) for p in (0.0, 0.5, 1.0)] == [0.0, 0.5, 1.0]
    step = NegativeSampling("debiased", warmup_fraction=0.5, strength=0.8)
    assert step.at(0.4).strength == 0.0 and step.at(0.5).strength == pytest.approx(0.8)
    # the schedule moves the loss from plain InfoNCE to the full strategy
    x = _data(8)
    z, index = x["z"].float(), x["index"]
    plain = info_nce(z, positive_index=index)
    full = info_nce(z, positive_index=index, negatives=replace(cos, schedule="constant"))
    torch.testing.assert_close(info_nce(z, positive_index=index, negatives=cos.at(0.0)), plain)
    torch.testing.assert_close(info_nce(z, positive_index=index, negatives=cos.at(1.0)), full)
    with pytest.raises(UserError, match=r"at\(progress\)"):
        info_nce(z, positive_index=index, negatives=cos)


def test_validation_errors() -> None:
    with pytest.raises(UserError, match=r"NegativeSampling.kind 'hard'.*hard_topk"):
        NegativeSampling("hard")
    with pytest.raises(UserError, match=r"^NegativeSampling.k must be >= 1, got 0$"):
        NegativeSampling("hard_topk", k=0)
    with pytest.raises(UserError, match=r"^NegativeSampling.k: expected an integer, got 1.5$"):
        NegativeSampling("hard_topk", k=1.5)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"NegativeSampling.threshold must be a finite number, got nan"):
        NegativeSampling("threshold", threshold=float("nan"))
    with pytest.raises(UserError, match=r"tau_plus must be < 1"):
        NegativeSampling("debiased", tau_plus=1.0)
    with pytest.raises(UserError, match=r"beta must be >= 0"):
        NegativeSampling("hard_weighting", beta=-1)
    with pytest.raises(UserError, match=r"schedule 'step'"):
        NegativeSampling(schedule="step")
    with pytest.raises(UserError, match=r"strength must be <= 1"):
        NegativeSampling(strength=2)
    with pytest.raises(UserError, match="NegativeSampling or None"):
        info_nce(torch.randn(4, 3), labels=torch.zeros(4), negatives="hard_topk")  # type: ignore[arg-type]


def test_config_section_and_conversion() -> None:
    cfg = load_config(
        "digits-simclr",
        ["method.negatives.kind=hard_weighting", "method.negatives.beta=0.5", "method.negatives.schedule=linear"],
    )
    assert isinstance(cfg.method.negatives, NegativeSampling)  # the config section is the strategy itself
    s = negative_sampling_from_config(cfg.method.negatives)
    assert s == NegativeSampling("hard_weighting", beta=0.5, schedule="linear")
    assert negative_sampling_from_config(NegativeSampling()) is None  # uniform: the plain kernel
    with pytest.raises(UserError, match=r"^method.negatives.margin must be >= 0, got -1.0$"):
        load_config("digits-simclr", ["method.negatives.margin=-1"])
    with pytest.raises(UserError, match=r"unknown method.negatives.kind 'debias'.*'debiased'"):
        load_config("digits-simclr", ["method.negatives.kind=debias"])


def test_simclr_follows_the_schedule_and_pipeline_wires_it() -> None:
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8))
    s = NegativeSampling("hard_topk", k=2, schedule="linear")
    model = SimCLR(enc, 8, projection_dim=4, projection_hidden_dim=8, temperature=0.3, negatives=s)
    model.eval()
    x1, x2 = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    z = model.projector(enc(torch.cat([x1, x2])))
    index = (torch.arange(12) + 6) % 12
    start = model.training_step({"views": [x1, x2]}).loss
    torch.testing.assert_close(start, info_nce(z, positive_index=index, temperature=0.3))
    model.on_step_end(9, 10)
    assert model.progress == 1.0
    end = model.training_step({"views": [x1, x2]}).loss
    torch.testing.assert_close(end, info_nce(z, positive_index=index, temperature=0.3, negatives=s.at(1.0)))

    cfg = load_config("digits-simclr", tiny_overrides(**{"method.negatives.kind": "debiased"}))
    built = build_image_method(cfg.method, cfg.model, 1, 8)
    assert built.opts.negatives == NegativeSampling("debiased")  # type: ignore[union-attr]
    assert built.kernel_options()["negatives"] == NegativeSampling("debiased")  # type: ignore[operator]
