"""Tiny generated text data for the text / image–text tests (no downloads, no hub).

Sentences "the SUBJECT VERB the OBJECT" followed by three filler words from a small set. STS
pairs share 0–3 of the (subject, verb, object) slots and are scored by how many they share,
so a sentence encoder does well by attending to the slot words, not the fillers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

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
    base.update(extra)
    out: list[str] = []
    for key, value in base.items():
        out += ["--set", f"{key}={value}"]
    return out



def fake_tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
    """A tokenizer stand-in without transformers: a word → the sum of its character codes."""
    length = max(len(t.split()) for t in texts)
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    for i, t in enumerate(texts):
        for j, w in enumerate(t.split()):
            ids[i, j] = sum(map(ord, w))
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}
