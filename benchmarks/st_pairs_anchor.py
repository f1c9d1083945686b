"""Anchor for benchmarks/text_pairs_sick.py: sentence-transformers trained on SICK pairs.

Runs in a Python that has sentence-transformers (the benchmarks/common.py it imports needs only
the standard library): ``--loss mnrl`` is MultipleNegativesRankingLoss on (anchor, positive)
pairs (scale 20 = 1 / temperature 0.05), ``--loss triples`` the same loss on (anchor, positive,
negative) rows (a mined hard negative per row; every row's positive and negative are the other
rows' negatives too), ``--loss cosent`` CoSENTLoss (scale 20) on (sentence1, sentence2, score)
rows; ``--batch-sampler no_duplicates`` uses its NoDuplicatesBatchSampler.
SentenceTransformerTrainer runs ``--max-steps`` steps, then the test sentences are encoded.
Prints one JSON line with the timings (``train_seconds``: the training loop, from the trainer's
on_train_begin to on_train_end, as contrastkit times its loop; ``train_call_seconds``: the whole
``trainer.train()`` call, its setup included); writes the embeddings to --out (.npy).
``--record-batches FILE`` writes the row indices of the batches trained on (for
``text_pairs_sick.py --same-batches``); ``--no-dropout`` turns the model's dropout off.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import add_numbers, parser

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="folder of all-MiniLM-L6-v2")
    p.add_argument("--train", required=True, help="TSV with a header: a, b (mnrl), a, b, score (cosent) or "
                   "anchor, positive, negative (triples)")
    p.add_argument("--loss", choices=["mnrl", "triples", "cosent"], required=True)
    p.add_argument("--batch-sampler", choices=["batch_sampler", "no_duplicates"], default="batch_sampler")
    p.add_argument("--test", required=True, help="sentences to encode after training, one per line")
    p.add_argument("--out", required=True, help="the embeddings of the --test sentences (.npy)")
    p.add_argument("--no-dropout", action="store_true", help="train with every dropout of the model off")
    p.add_argument("--record-batches", default=None, help="write the row indices of the batches trained on here (JSON)")
    add_numbers(p, max_steps=20, batch_size=32, lr=2e-5, max_length=64, threads=1, seed=0)
    args = p.parse_args()

    import numpy as np
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import TrainerCallback

    class LoopClock(TrainerCallback):
        """Seconds from the start of the training loop to its end (as contrastkit's summary
        counts: the trainer's setup before the first batch is left out)."""

        def __init__(self) -> None:
            self.start = self.seconds = 0.0

        def on_train_begin(self, *args: object, **kwargs: object) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, *args: object, **kwargs: object) -> None:
            self.seconds = time.perf_counter() - self.start

    class RecordingSampler(torch.utils.data.Sampler):
        """The trainer's batch sampler, the batches it yields written down."""

        def __init__(self, inner: Any, seen: list[list[int]]) -> None:
            self.inner, self.seen = inner, seen

        def __iter__(self) -> Iterator[list[int]]:
            for batch in self.inner:
                self.seen.append([int(i) for i in batch])
                yield batch

        def __len__(self) -> int:
            return len(self.inner)

        def set_epoch(self, epoch: int) -> None:
            self.inner.set_epoch(epoch)

    seen: list[list[int]] = []

    class Trainer(SentenceTransformerTrainer):
        def get_batch_sampler(self, *a: Any, **k: Any) -> Any:
            inner = super().get_batch_sampler(*a, **k)
            return RecordingSampler(inner, seen) if args.record_batches else inner

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_length
    if args.no_dropout:  # the nn.Dropout modules and the attention's dropout probability
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            if hasattr(module, "dropout_prob"):
                module.dropout_prob = 0.0
    with open(args.train, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if args.loss == "mnrl":
        data = Dataset.from_dict({"anchor": [r["a"] for r in rows], "positive": [r["b"] for r in rows]})
        loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    elif args.loss == "triples":
        data = Dataset.from_dict({c: [r[c] for r in rows] for c in ("anchor", "positive", "negative")})
        loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    else:
        data = Dataset.from_dict({"sentence1": [r["a"] for r in rows], "sentence2": [r["b"] for r in rows],
                                  "score": [float(r["score"]) for r in rows]})
        loss = losses.CoSENTLoss(model, scale=20.0)
    with tempfile.TemporaryDirectory() as tmp:
        targs = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            max_steps=args.max_steps,
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
            batch_sampler=BatchSamplers(args.batch_sampler),
        )
        loop = LoopClock()
        trainer = Trainer(model=model, args=targs, train_dataset=data, loss=loss, callbacks=[loop])
        t0 = time.perf_counter()
        trainer.train()
        call_seconds = time.perf_counter() - t0
        steps = trainer.state.global_step
    test = [s for s in Path(args.test).read_text(encoding="utf-8").splitlines() if s]
    t0 = time.perf_counter()
    emb = model.encode(test, batch_size=128, convert_to_numpy=True, normalize_embeddings=False)
    encode_seconds = time.perf_counter() - t0
    np.save(args.out, emb.astype(np.float32))
    if args.record_batches:  # the data loader may have drawn a batch ahead: the steps' batches only
        Path(args.record_batches).write_text(json.dumps(seen[:steps]))
    print(json.dumps({"train_seconds": loop.seconds, "train_call_seconds": call_seconds, "steps": steps,
                      "encode_seconds": encode_seconds}))


if __name__ == "__main__":
    main()
