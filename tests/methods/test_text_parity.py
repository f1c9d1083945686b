"""Our sentence-embedding steps against sentence-transformers' losses on the same model and batch:
simcse_supervised = MultipleNegativesRankingLoss (scale 20) and cosent = CoSENTLoss (scale 20),
the loss value and the gradient of every weight of MiniLM (dropout off, so both are exact)."""

from __future__ import annotations

import os

import pytest
import torch

from contrastkit.encoders.text import load_pretrained_text_encoder, minilm_path
from contrastkit.methods import CoSENT, SimCSE

ANCHORS = [
    "A man is playing a guitar on the stage",
    "Two dogs are running through a field",
    "A woman is slicing an onion",
    "The kids are playing in the park",
    "A cat is sleeping on the sofa",
    "Someone is riding a bicycle down the hill",
]
OTHERS = [
    "A person plays a guitar",
    "Dogs run in the grass",
    "A woman is cutting a vegetable",
    "Children are playing outdoors near the trees",
    "A cat sleeps",
    "A man is driving a car",
]
SCORES = [4.6, 4.2, 4.0, 3.9, 4.4, 1.8]


@pytest.fixture(scope="module")
def models() -> tuple:
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed (the export extra)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ours = load_pretrained_text_encoder(minilm_path(), max_length=64).eval()
    theirs = st.SentenceTransformer(str(minilm_path()), device="cpu").eval()
    theirs.max_seq_length = 64
    return ours, theirs


def _our_step(method: torch.nn.Module, encoder: torch.nn.Module, extra: dict) -> tuple[float, dict[str, torch.Tensor]]:
    a, b = encoder.tokenize(ANCHORS), encoder.tokenize(OTHERS)
    batch = {"views": [a["input_ids"], b["input_ids"]], "masks": [a["attention_mask"], b["attention_mask"]], **extra}
    method.zero_grad()
    loss = method.training_step(batch).loss
    loss.backward()
    grads = {k: p.grad.clone() for k, p in encoder.model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _their_step(loss_fn: torch.nn.Module, model: torch.nn.Module, labels: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = loss_fn([model.tokenize(ANCHORS), model.tokenize(OTHERS)], labels)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model[0].auto_model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _same_gradients(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert set(ours) == set(theirs)
    flat_ours = torch.cat([ours[k].flatten() for k in sorted(ours)])
    flat_theirs = torch.cat([theirs[k].flatten() for k in sorted(ours)])
    assert torch.linalg.vector_norm(flat_ours - flat_theirs) <= 1e-4 * torch.linalg.vector_norm(flat_theirs)


@pytest.mark.parametrize("name", ["simcse_supervised", "cosent"])
def test_step_equals_sentence_transformers(models: tuple, name: str) -> None:
    from sentence_transformers.sentence_transformer import losses

    encoder, model = models
    torch.manual_seed(0)
    if name == "cosent":
        scores = torch.tensor(SCORES)
        method, extra = CoSENT(encoder, scale=20.0), {"scores": scores}
        loss_fn, labels = losses.CoSENTLoss(model, scale=20.0), scores
    else:
        method, extra = SimCSE(encoder, temperature=0.05), {}
        loss_fn, labels = losses.MultipleNegativesRankingLoss(model, scale=20.0), torch.zeros(len(ANCHORS))
    ours, our_grads = _our_step(method, encoder, extra)
    theirs, their_grads = _their_step(loss_fn, model, labels)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert ours > 0.01  # a loss with something to learn: the gradients compared are not ~0
    _same_gradients(our_grads, their_grads)
