"""Tiny generated text data for the text / image–text tests (no downloads, no hub), and the
``--set`` overrides of tiny text and CLIP runs on it.

Sentences "the SUBJECT VERB the OBJECT" followed by three filler words from a small set. STS
pairs share 0–3 of the (subject, verb, object) slots and are scored by how many they share,
so a sentence encoder does well by attending to the slot words, not the fillers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

SUBJECTS = ["man", "woman", "child", "dog", "cat", "chef", "pilot", "doctor", "farmer", "singer",
            "student", "teacher", "boy", "girl", "horse", "bird"]
VERBS = ["eats", "sees", "holds", "paints", "buys", "finds", "carries", "washes", "cooks", "throws",
         "opens", "drops"]
OBJECTS = ["apple", "guitar", "ball", "book", "box", "car", "fish", "hat", "cup", "door", "letter",
           "rope", "bread", "kite"]
FILLERS = ["today", "now", "again", "slowly", "quietly", "here"]


def sentence(subject: str, verb: str, obj: str, rng: random.Random) -> str:
    return " ".join(["the", subject, verb, "the", obj, *rng.sample(FILLERS, 3)])


def make_corpus(n: int = 1200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = [sentence(rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng) for _ in range(n)]
    return list(dict.fromkeys(out))


def make_sts(n: int = 200, seed: int = 1) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    pools = (SUBJECTS, VERBS, OBJECTS)
    rows = []
    for _ in range(n):
        a = [rng.choice(p) for p in pools]
        keep = set(rng.sample(range(3), rng.randint(0, 3)))
        b = [a[i] if i in keep else rng.choice([w for w in pool if w != a[i]]) for i, pool in enumerate(pools)]
        rows.append((sentence(*a, rng), sentence(*b, rng), float(len(keep))))
    return rows


def write_text_data(folder: Path, n: int = 1200) -> dict[str, Path]:
    """corpus.txt (one sentence per line) and sts.tsv (s1, s2, score) in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(make_corpus(n)) + "\n")
    sts = folder / "sts.tsv"
    lines = ["s1\ts2\tscore"] + [f"{a}\t{b}\t{s}" for a, b, s in make_sts()]
    sts.write_text("\n".join(lines) + "\n")
    return {"corpus": corpus, "sts": sts}


@contextlib.contextmanager
def quick_runs() -> Iterator[None]:
    """For a module's runs (wrap a module-scoped autouse fixture in it): one torch thread (tiny
    models run fastest on one; the function-scoped ``one_thread`` fixture comes after the
    module's fixtures) and no report.html from train / evaluate (its figures cost ~0.5 s a run;
    tests/report checks the report)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("contrastkit.report.refresh_run_report", lambda *args, **kwargs: None)
            yield
    finally:
        torch.set_num_threads(before)


def as_sets(overrides: dict[str, Any]) -> list[str]:
    """``{"train.max_steps": 4}`` → ``["--set", "train.max_steps=4"]``."""
    return [x for key, value in overrides.items() for x in ("--set", f"{key}={value}")]


def tiny_clip_sets(**extra: Any) -> list[str]:
    """--set overrides: CLIP on digits (captions from the labels), a 5-layer CNN of width 8 and
    a one-layer tiny BERT, 16-d joint embeddings; 4 steps unless told otherwise."""
    base: dict[str, Any] = {
        "task": "image_text",
        "method.name": "clip",
        "method.embed_dim": 16,
        "data.name": "digits",
        "model.encoder": "convnet5",
        "model.width": 8,
        "text.encoder": "tiny",
        "text.tiny_width": 32,
        "text.tiny_layers": 1,
        "text.max_length": 12,
        "train.batch_size": 64,
        "train.max_steps": 4,
        "train.checkpoint_every": 4,
        "train.progress": False,
    }
    return as_sets({**base, **extra})


def tiny_text_sets(paths: dict[str, Path], **extra: Any) -> list[str]:
    """--set overrides: unsupervised SimCSE with a tiny random BERT on the generated data."""
    base: dict[str, Any] = {
        "task": "text",
        "method.name": "simcse",
        "method.temperature": 0.05,
        "text.train_file": str(paths["corpus"]),
        "text.sts_file": str(paths["sts"]),
        "text.sts_columns": "[s1, s2, score]",
        "text.encoder": "tiny",
        "text.tiny_width": 32,
        "text.tiny_layers": 2,
        "text.max_length": 16,
        "optim.lr": 0.001,
        "optim.weight_decay": 0.0,
        "train.batch_size": 64,
        "train.max_steps": 60,
        "train.checkpoint_every": 30,
        "train.log_every": 10,
        "train.progress": False,
        "train.seed": 0,
    }
    return as_sets({**base, **extra})


def fake_tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
    """A tokenizer stand-in without transformers: a word → the sum of its character codes."""
    length = max(len(t.split()) for t in texts)
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    for i, t in enumerate(texts):
        for j, w in enumerate(t.split()):
            ids[i, j] = sum(map(ord, w))
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}
