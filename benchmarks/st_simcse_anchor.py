"""Anchor for benchmarks/text_simcse_sick.py: unsupervised SimCSE with sentence-transformers.

Runs in a separate virtual environment that has sentence-transformers (never contrastkit's; the
benchmarks/common.py it imports needs only the standard library):
MultipleNegativesRankingLoss over (s, s) pairs (dropout makes the two encodings differ; scale
20 = 1 / temperature 0.05), trained by SentenceTransformerTrainer, then encodes the test
sentences. Prints one JSON line with the timings; writes the embeddings to --out (.npy).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from common import add_numbers, parser

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="folder of all-MiniLM-L6-v2")
    p.add_argument("--train", required=True, help="training sentences, one per line")
    p.add_argument("--test", required=True, help="sentences to encode after training, one per line")
    p.add_argument("--out", required=True, help="the embeddings of the --test sentences (.npy)")
    add_numbers(p, epochs=1, batch_size=64, lr=1e-5, max_length=64, threads=1, seed=0)
    args = p.parse_args()

    import numpy as np
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_length
    sentences = [s for s in Path(args.train).read_text(encoding="utf-8").splitlines() if s]
    data = Dataset.from_dict({"anchor": sentences, "positive": sentences})
    loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    with tempfile.TemporaryDirectory() as tmp:
        targs = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            warmup_ratio=0.1,
            weight_decay=0.0,
            lr_scheduler_type="linear",
            save_strategy="no",
            report_to="none",
            logging_steps=10,
            seed=args.seed,
            dataloader_drop_last=True,
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=data, loss=loss)
        t0 = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - t0
        steps = trainer.state.global_step
    test = [s for s in Path(args.test).read_text(encoding="utf-8").splitlines() if s]
    t0 = time.perf_counter()
    emb = model.encode(test, batch_size=128, convert_to_numpy=True, normalize_embeddings=False)
    encode_seconds = time.perf_counter() - t0
    np.save(args.out, emb.astype(np.float32))
    print(json.dumps({"train_seconds": train_seconds, "steps": steps, "encode_seconds": encode_seconds}))


if __name__ == "__main__":
    main()
