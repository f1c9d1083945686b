"""Docs as tests: every shell command of README.md and docs/*.md runs here exactly as written.

The only changes are the overrides in ``COMMANDS`` below, next to each command: they shorten
long runs (steps, epochs, evaluation sample counts) or fill in a placeholder; evaluation stays
on, and a command shown with ``--nproc 2`` / ``torchrun`` runs that way. A command added to the
docs without an entry here fails ``test_every_documented_command_has_a_test``.

Cost: commands run in this process where they can (``contrastkit.cli.main``), on one thread
(two pytest workers share the machine's cores); commands the docs chain (train, then resume /
evaluate / export / serve the run) share that run, and a command written identically in two
documents of one half runs once (its output folder is linked into the other document's
folder). A command whose path another CI test already covers is marked ``slow`` (kept out of
CI, ``pytest -m slow``) and says which test covers it; so are benchmarks that need their anchor
environments or take minutes. Commands that need data which is not always present
(Fashion-MNIST, MovieLens, SICK) skip with the reason when it is absent.

Set ``CONTRASTKIT_DOCS_TIMES=FILE`` to get the wall and CPU seconds of every command run (one
JSON line each, appended to FILE).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.cli import main

from .conftest import FASHION_MNIST, SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
# the two halves (a file each, so that they run on different pytest workers); documents that
# share runs (README's MovieLens and photo runs are use.md's and data.md's too) are in one half
README_HALF = ("README.md", "docs/use.md", "docs/data.md")
TIMES = os.environ.get("CONTRASTKIT_DOCS_TIMES")

# Fashion-MNIST runs (60k / 10k images), shortened: one step of 32 images, probes of the SSL
# encoder on 300 / 100 images with one few-label probe (10 per class, one draw); no baselines,
# fine-tuning or pictures (make demo shows those on digits)
FM_QUICK = [
    "train.max_steps=1", "train.batch_size=32", "eval.max_train_samples=300", "eval.max_test_samples=100",
    "eval.finetune=false", "eval.baselines=false", "eval.plots=false", "eval.few_label_shots=[10]",
    "eval.few_label_draws=1",
]
# digits runs: one few-label probe (10 per class, one draw) instead of three with five draws, no
# baselines and no pictures (the same evaluation of more encoders, and matplotlib: make demo
# shows them)
DIGITS_EVAL = ["eval.few_label_shots=[10]", "eval.few_label_draws=1", "eval.baselines=false", "eval.plots=false"]
ML100K = SHARED_DATA / "ml-100k"
SICK = SHARED_DATA / "sick"
BENCH_PYTHON = os.environ.get("CONTRASTKIT_BENCH_PYTHON")  # a Python with the `bench` extra


@dataclass(frozen=True)
class Command:
    """How a documented command is run: ``sets`` are --set overrides appended to it, ``replace``
    fills in placeholders, ``after`` names commands of the same document it builds on."""

    sets: list[str] = field(default_factory=list)
    replace: dict[str, str] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    data: Path | None = None  # skip when this file or folder is absent
    expect: str = ""  # text the output must contain
    slow: str = ""  # why it runs only with -m slow (for a covered path: the CI test that covers it)
    exempt: str = ""  # why it is not run at all
    nodes: int = 1  # run this many copies at once (torchrun on several "machines")
    serves: str = ""  # a server: start it, GET this path (must answer 200 with `expect`), then Ctrl-C it


DIGITS_RUN = "contrastkit train digits-simclr --set train.epochs=20 --set method.temperature=0.5 --out runs/d"
FM_RUN = "contrastkit train fashion-mnist-simclr --nproc 2 --out runs/fm2"
SICK_RUN = "contrastkit train sick-simcse --out runs/sick"
BYOL_RUN = "contrastkit train digits-simclr --set method.name=byol --set train.epochs=5 --out runs/byol"
ML100K_RUN = "contrastkit train ml100k-lightgcn --set recsys.root=PATH/TO/ml-100k --out runs/ml100k"
R18_RUN = "contrastkit train digits-simclr --set model.encoder=resnet18 --set train.epochs=2 --out runs/r18"
PHOTOS_PREPARE = "contrastkit prepare PATH/TO/photos --out stores/photos --size 32"
PHOTOS_RUN = "contrastkit train cifar10-simclr --set data.name=store --set data.root=stores/photos --out runs/photos"
PHOTOS_QUICK = ["train.max_steps=1", "train.batch_size=8", "eval.finetune=false", *DIGITS_EVAL]
W2V_RUN = "contrastkit train text-word2vec --set sequences.text_file=PATH/TO/corpus.txt --out runs/w2v"
# CartPole from pixels: 60 environment steps (learning from step 20, one round of 2 gradient steps
# every 10), the return curve at steps 30 and 60, a state probe on 100 frames
RL_QUICK = [
    "rl.steps=60", "rl.learning_starts=20", "rl.train_freq=10", "rl.gradient_steps=2", "rl.eval_every=30",
    "rl.eval_episodes=1", "rl.probe_steps=100", "rl.buffer_size=100", "rl.height=24", "rl.width=48",
    "train.batch_size=16",
]
# GANs: 2 steps of 16 images, the cached SimCLR feature space trained for 1 step, metrics on 50
# samples, the discriminator's probe on 100 labelled images
GAN_QUICK = ["train.max_steps=2", "train.batch_size=16", "gan.feature_steps=1", "gan.eval_samples=50",
             "gan.probe_samples=100"]
GAN_FM = "contrastkit train fashion-mnist-contrad --out runs/contrad"
ANCHOR = "/path/to/venv-with-lightly/bin/python"
SICK_SLOW = "MiniLM encodes SICK's 9k sentences: a minute (tests/tasks/test_text_cli.py runs the same on tiny data)"
PAIRS_RUN = "contrastkit train sick-pairs --set eval.dev_every=10 --set text.dev_file=sick:trial --out runs/pairs"
PAIRS_MINE = "contrastkit mine runs/pairs --corpus sick:all --negatives 2 --margin 0.05 --out runs/pairs/triples.tsv"
PAIRS_SLOW = ("MiniLM encodes SICK's sentences: minutes on a CPU (tests/tasks/test_text_triples.py runs the dev set, mine and "
              "training on the mined triples from Parquet on tiny data)")
ST_ANCHOR = "/path/to/venv-with-sentence-transformers/bin/python"
COMPARE_SLOW = "eight recipes for a minute each (tests/test_compare.py runs compare, two digits recipes, in CI)"
FM_SLOW = ("covered: the same recipe trains and evaluates in CI under `torchrun --standalone` (distributed.md), and "
           "Fashion-MNIST trains and evaluates in one process with README's fashion-mnist-supcon-1pct")
NPROC_SLOW = ("covered: tests/training/test_preemption.py runs `contrastkit train --nproc 2` on the digits quickstart, "
              "evaluated in rank 0 (test_two_process_quickstart_evaluates_once_in_rank_0); distributed.md's "
              "`torchrun --standalone --nproc-per-node 2` (the launcher --nproc uses) runs here in CI")
R18_SLOW = ("covered: tests/export/test_export.py trains digits-simclr with model.encoder=resnet18 through the CLI "
            "and exports it to torchvision, timm and onnx (test_state_dict_loads_strictly_and_matches_embed, "
            "test_onnx_image_encoder_matches_embed)")
W2V_COMMAND = Command(
    replace={"PATH/TO/corpus.txt": "{corpus}"}, sets=["sequences.min_count=2", "train.epochs=1"], expect="tokens/s"
)
SWEEP_RUN = ("contrastkit sweep digits-simclr --space method.temperature=0.05:0.5:log --space optim.lr=0.0005:0.005:log "
             "--trials 8 --budget-minutes 0.5 --validate-every 50 --out sweeps/digits")
# sweeps: trials (and the final runs) of 6 steps of 64 images on an 8-wide network, the digits evaluation
SWEEP_QUICK = ["model.width=8", "model.projection_hidden_dim=32", "model.projection_dim=16", "train.batch_size=64",
               "train.max_steps=6", *DIGITS_EVAL]
COMMANDS: dict[str, dict[str, Command]] = {
    "README.md": {
        "make demo": Command(
            replace={"make demo": "make -C {repo} demo"},
            # the default evaluation (baselines, t-SNE, neighbours) with one few-label probe, one draw
            sets=["train.max_steps=2", "train.batch_size=64", "eval.tsne_points=100", "eval.few_label_shots=[10]",
                  "eval.few_label_draws=1"],  # through DEMO_ARGS
            expect="raw_pixels",
        ),
        "make test": Command(exempt="the command that runs this test suite (CI runs it)"),
        "source .venv/bin/activate": Command(exempt="a shell builtin; the tests call the venv's own contrastkit"),
        "contrastkit doctor": Command(expect="optional extras"),
        "contrastkit recipes": Command(expect="digits-simclr"),
        "contrastkit recipes show digits-simclr": Command(expect="name: digits-simclr"),
        "contrastkit train fashion-mnist-simclr --set train.epochs=1 --out runs/fm": Command(
            sets=FM_QUICK, data=FASHION_MNIST, expect="ssl", slow=FM_SLOW
        ),
        DIGITS_RUN: Command(sets=["train.max_steps=2", *DIGITS_EVAL], expect="accuracy (%) on the test split"),
        "contrastkit train --out runs/d --resume": Command(
            sets=["train.max_steps=3", *DIGITS_EVAL], after=(DIGITS_RUN,), expect="resumed runs/d at step 2/3"
        ),
        "contrastkit evaluate runs/d": Command(after=(DIGITS_RUN,), expect="accuracy (%) on the test split"),
        "contrastkit embed runs/d --data digits:test --out feats.npy": Command(after=(DIGITS_RUN,), expect="wrote 360 × 128"),
        "contrastkit methods byol": Command(expect="method.momentum_final = 1.0"),
        BYOL_RUN: Command(sets=["train.max_steps=2", *DIGITS_EVAL], expect="ssl"),
        "contrastkit compare digits-simclr digits-moco-v2 digits-moco-v3 digits-byol digits-simsiam "
        "digits-barlow-twins digits-vicreg digits-supcon --budget-minutes 1 --out runs/cmp": Command(
            slow=COMPARE_SLOW, expect="supcon"
        ),
        "contrastkit train fashion-mnist-supcon-1pct --out runs/fm-1pct": Command(
            sets=FM_QUICK, data=FASHION_MNIST, expect="labels used"
        ),
        "contrastkit train digits-simclr --nproc 2 --out runs/d2": Command(
            sets=["train.max_steps=2", *DIGITS_EVAL], expect="accuracy (%) on the test split", slow=NPROC_SLOW
        ),
        ML100K_RUN: Command(replace={"PATH/TO/ml-100k": str(ML100K)}, sets=["train.epochs=1"], data=ML100K, expect="popularity"),
        W2V_RUN: W2V_COMMAND,
        "contrastkit similar runs/w2v --word doctor --k 5": Command(
            after=(W2V_RUN,), expect="5 words most similar to word doctor"
        ),
        "contrastkit train ml100k-item2vec --set recsys.root=PATH/TO/ml-100k --out runs/i2v": Command(
            replace={"PATH/TO/ml-100k": str(ML100K)}, sets=["train.epochs=1"], data=ML100K, expect="popularity"
        ),
        "contrastkit train fashion-mnist-novel-fewshot --out runs/fewshot": Command(
            sets=[*FM_QUICK, "eval.max_test_samples=300", "eval.episodes=10"], data=FASHION_MNIST, expect="5-way 5-shot",
            slow="covered: tests/evaluate/test_episodes.py trains on classes 0-4 and evaluates 5-way 1- and 5-shot "
            "episodes on the novel classes through the runner (test_novel_class_protocol_keeps_novel_classes_out_of_"
            "pre_training, on digits); Fashion-MNIST loads in CI with README's fashion-mnist-supcon-1pct",
        ),
        "contrastkit recommend runs/ml100k --user 196 --k 5": Command(after=(ML100K_RUN,), data=ML100K, expect="top 5 for user"),
        SICK_RUN: Command(
            sets=["train.max_steps=4", "eval.baselines=false", f"text.data_root={SICK}"], data=SICK,
            expect="STS spearman", slow=SICK_SLOW,
        ),
        "contrastkit report runs/d runs/byol --out runs/d-vs-byol.html": Command(
            after=(DIGITS_RUN, BYOL_RUN), expect="wrote runs/d-vs-byol.html"
        ),
        "contrastkit export runs/d --format onnx --out runs/d/encoder.onnx": Command(
            after=(DIGITS_RUN,), expect="parity with contrastkit embed"
        ),
        "contrastkit export runs/d --format arrays --data digits:test --out digits-test.parquet": Command(
            after=(DIGITS_RUN,), expect="360 × 128 embeddings"
        ),
        "contrastkit serve runs/d --port 8765": Command(
            after=(DIGITS_RUN,), serves="/api/neighbours/0", expect='"score"',
            slow="covered: tests/serve/test_serve.py starts `contrastkit serve RUN --port P`, fetches a page and stops "
            "it with Ctrl-C (test_cli_serves_until_ctrl_c); an image run's /api/neighbours answers in "
            "test_image_run_without_index_browses_test_images",
        ),
        PHOTOS_PREPARE: Command(replace={"PATH/TO/photos": "{photos}"}, expect="3 classes"),
        PHOTOS_RUN: Command(after=(PHOTOS_PREPARE,), sets=PHOTOS_QUICK, expect="ssl"),
        "contrastkit index runs/sick --data sick:test": Command(after=(SICK_RUN,), data=SICK, expect="indexed", slow=SICK_SLOW),
        'contrastkit search runs/sick --query "A man is playing a guitar" --k 3': Command(
            after=(SICK_RUN, "contrastkit index runs/sick --data sick:test"), data=SICK, expect="text query",
            slow=SICK_SLOW,
        ),
    },
    "docs/benchmarks.md": {
        "python benchmarks/sweep_ml100k.py --root ../shared/data/ml-100k --out runs/bench-sweep-ml100k "
        "--recbole-python /work/benchvenv-recbole/bin/python": Command(
            replace={"python ": f"{sys.executable} ", "../shared/data/ml-100k": str(ML100K),
                     "benchmarks/": f"{REPO}/benchmarks/"},
            slow="40 SimGCL / SGL trainings (a sweep's mechanisms: tests/sweep/)",
            data=Path("/work/benchvenv-recbole/bin/python"),
        ),
        "contrastkit sweep fashion-mnist-simclr --space method.temperature=0.05:1:log "
        "--space data.augment.color_jitter.brightness=0.1:0.8 --space data.augment.color_jitter.contrast=0.1:0.8 "
        "--trials 8 --budget-minutes 2 --validate-every 40 --set train.num_threads=2 --set eval.finetune=false "
        "--set \"eval.few_label_shots=[10]\" --set eval.plots=false --set eval.baselines=false --out runs/sweep-fm2": Command(
            slow="8 trials of 2 minutes and two tested runs (the same command on digits: docs/sweep.md)", data=FASHION_MNIST,
        ),
        f"python benchmarks/fashion_mnist_budget.py --minutes 10 --out runs/bench-fm --anchor-python {ANCHOR}": Command(
            replace={ANCHOR: BENCH_PYTHON or ANCHOR, "python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"},
            slow="a 10-minute budget per library", data=Path(BENCH_PYTHON or ANCHOR),
        ),
        "python benchmarks/recsys_ml100k.py --root ../shared/data/ml-100k --out runs/bench-recsys "
        "--recbole-python /work/recbolevenv/bin/python": Command(
            replace={
                "python ": f"{sys.executable} ", "../shared/data/ml-100k": str(ML100K), "benchmarks/": f"{REPO}/benchmarks/"
            },
            slow="full training of eight models", data=Path("/work/recbolevenv/bin/python"),
        ),
        f"python benchmarks/text_simcse_sick.py --anchor-python {ST_ANCHOR}": Command(
            replace={ST_ANCHOR: BENCH_PYTHON or ST_ANCHOR, "python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"},
            slow="one SimCSE epoch per library", data=Path(BENCH_PYTHON or ST_ANCHOR),
        ),
        f"python benchmarks/text_pairs_sick.py --anchor-python {ST_ANCHOR} --data-root ../shared/data/sick --max-steps 20 "
        "--batch-size 32 --seeds 3": Command(
            replace={ST_ANCHOR: BENCH_PYTHON or ST_ANCHOR, "python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/",
                     "../shared/data/sick": str(SICK)},
            slow="24 MiniLM trainings and SICK evaluations", data=Path(BENCH_PYTHON or ST_ANCHOR),
        ),
        **{
            f"python benchmarks/text_pairs_sick.py --anchor-python {ST_ANCHOR} --data-root ../shared/data/sick "
            f"--max-steps 20 --batch-size 32 {extra} --set optim.schedule=linear --set optim.grad_clip=1.0": Command(
                replace={ST_ANCHOR: BENCH_PYTHON or ST_ANCHOR, "python ": f"{sys.executable} ",
                         "benchmarks/": f"{REPO}/benchmarks/", "../shared/data/sick": str(SICK)},
                slow="MiniLM trainings and SICK evaluations, each side", data=Path(BENCH_PYTHON or ST_ANCHOR),
            )
            for extra in (
                "--seeds 6", "--losses cosent --seeds 6 --first-seed 6", "--losses mnrl cosent --seeds 2 --same-batches"
            )
        },
        "python benchmarks/fashion_mnist_budget.py --recipe fashion-mnist-swav --minutes 4 --out runs/bench23/swav "
        "--set train.num_threads=1 --set eval.finetune=false --set eval.plots=false --set \"eval.few_label_shots=[10]\" "
        "--set eval.report=false --set eval.baselines=false --set method.freeze_prototypes_steps=20": Command(
            replace={"python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"},
            slow="a 4-minute budget and a full evaluation", data=FASHION_MNIST,
        ),
        "python benchmarks/fashion_mnist_budget.py --recipe fashion-mnist-swav --minutes 4 --out runs/bench23/swav-lightly "
        f"--skip-ours --anchor-python {ANCHOR} --set method.freeze_prototypes_steps=20": Command(
            replace={ANCHOR: BENCH_PYTHON or ANCHOR, "python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"},
            slow="a 4-minute budget for lightly's SwAV", data=Path(BENCH_PYTHON or ANCHOR),
        ),
        "contrastkit train fashion-mnist-clip --set train.num_threads=1 --out runs/fm-clip": Command(
            sets=["train.max_steps=1", "train.batch_size=32"], data=FASHION_MNIST, expect="zero-shot acc",
            slow="covered: tests/tasks/test_text_cli.py trains CLIP through `contrastkit train` and evaluates it "
            "zero-shot and by retrieval (test_clip_run_zero_shot_and_retrieval); this recipe's evaluation reads "
            "all 10,000 test images (no subset option): 20 s",
        ),
        "contrastkit compare digits-simclr digits-moco-v2 digits-moco-v3 digits-byol digits-simsiam "
        "digits-barlow-twins digits-vicreg digits-supcon --budget-minutes 1 --out runs/cmp": Command(
            slow=COMPARE_SLOW, expect="supcon"
        ),
        "python3 -m venv /work/benchvenv && /work/benchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 "
        "lightly==1.6.0 pytorch-metric-learning scikit-learn tqdm pyyaml safetensors matplotlib tensorboard "
        "faiss-cpu && /work/benchvenv/bin/pip install -e . --no-deps": Command(
            exempt="creates the benchmark environment (downloads several GB)"
        ),
        "python benchmarks/loop_overhead.py --steps 40 --rounds 10 --threads 2": Command(
            replace={"python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"}, slow="minutes of timing",
            expect="loop_own_ms_per_step",
        ),
        "/work/benchvenv/bin/python benchmarks/loss_speed.py --rounds 2 --out runs/bench-loss": Command(
            replace={"benchmarks/": f"{REPO}/benchmarks/"}, slow="minutes of timing", data=Path("/work/benchvenv/bin/python"),
        ),
        "/work/benchvenv/bin/python benchmarks/loss_speed.py --in-process --sizes 256 512 1024 2048 4096": Command(
            replace={"benchmarks/": f"{REPO}/benchmarks/"}, slow="minutes of timing", data=Path("/work/benchvenv/bin/python"),
        ),
        "/work/benchvenv/bin/python benchmarks/knn_speed.py --dims 128 512 --rounds 3": Command(
            replace={"benchmarks/": f"{REPO}/benchmarks/"}, slow="minutes of timing", data=Path("/work/benchvenv/bin/python"),
        ),
        "contrastkit train fashion-mnist-novel-fewshot --out runs/fewshot": Command(
            data=FASHION_MNIST, expect="5-way 5-shot", slow="the full recipe: 10 epochs and 2 × 600 episodes, 25 minutes"
        ),
        "python benchmarks/word2vec_gensim.py --seeds 3 --threads 2 --out runs/bench-w2v": Command(
            replace={"python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"},
            slow="word2vec and item2vec, 3 seeds, both libraries", expect="tokens/s",
        ),
        "python benchmarks/export_inference.py --rounds 5 --out runs/bench-export": Command(
            replace={"python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"}, slow="minutes of timing",
            expect="onnxruntime",
        ),
        "/work/benchvenv/bin/python benchmarks/train_throughput.py --rounds 3 --steps 30 --warmup 5": Command(
            replace={"benchmarks/": f"{REPO}/benchmarks/"}, slow="minutes of timing", data=Path("/work/benchvenv/bin/python"),
        ),
        "python benchmarks/data_prepare.py --images /tmp/bench/jpegs30k --count 30000 --rounds 3 "
        "--out runs/bench-data-prepare-30k": Command(
            exempt="benchmark (minutes of timing); run by hand, figures in this document",
        ),
        'python benchmarks/data_prepare.py --images /tmp/bench/jpegs --per-image 500 --out runs/bench-data-prepare': Command(
            exempt="benchmark (minutes of timing); run by hand, figures in this document",
        ),
        "python benchmarks/data_train_throughput.py --images /tmp/bench/jpegs --rounds 3 --warmup 2 --steps 8 "
        "--out runs/bench-data-train": Command(
            exempt="benchmark (minutes of timing); run by hand, figures in this document",
        ),
        "python benchmarks/data_train_throughput.py --images /tmp/bench/jpegs --rounds 5 --warmup 3 --steps 20 "
        "--set model.width=8 --out runs/bench-data-train-w8": Command(
            exempt="benchmark (minutes of timing); run by hand, figures in this document",
        ),
        'python benchmarks/data_store_memory.py generate --store /tmp/bench/store1m --count 1000000': Command(
            exempt="benchmark (writes a 12 GB store); run by hand, figures in this document",
        ),
        "python benchmarks/data_store_memory.py measure --store /tmp/bench/store1m --control /tmp/bench/store50k --steps 300 "
        "--eval-samples 5000 --set model.width=8 --out runs/bench-data-store-memory": Command(
            exempt="benchmark (trains on the 12 GB store); run by hand, figures in this document",
        ),
        "python benchmarks/recsys_given_beauty.py --root ../shared/data/amazon-beauty --out runs/bench-beauty20b-ours --models "
        "lightgcn --epochs 20 --eval-every 5 --threads 1 &": Command(exempt="benchmark (12 minutes); run by hand"),
        "python benchmarks/recsys_given_beauty.py --root ../shared/data/amazon-beauty --out runs/bench-beauty20b-recbole "
        "--models lightgcn --no-ours --recbole-python /work/benchvenv-recbole/bin/python --epochs 20 --eval-every 5 "
        "--threads 1": Command(
            exempt="benchmark (18 minutes of RecBole in its own environment); run by hand, figures in this document",
        ),
        'python benchmarks/gan_fashion_mnist.py --minutes 5 --seeds 0 1 --out /tmp/gan_bench': Command(
            exempt="benchmark (20 minutes of GAN training); run by hand, figures in this document",
        ),
        "for m in simgcl xsimgcl; do": Command(exempt="shell loop of the benchmark below"),
        "python benchmarks/recsys_given_beauty.py --root ../shared/data/amazon-beauty --out runs/bench-beauty20-$m --models $m "
        "--epochs 20 --eval-every 5 --threads 1 &": Command(exempt="benchmark (half an hour per model); run by hand"),
        "done": Command(exempt="shell loop of the benchmark above"),
    },
    "docs/use.md": {
        R18_RUN: Command(sets=["train.max_steps=1", *DIGITS_EVAL], expect="ssl", slow=R18_SLOW),
        "contrastkit export runs/r18 --format torchvision --out runs/r18/resnet18.safetensors": Command(
            after=(R18_RUN,), expect="strict=True", slow=R18_SLOW
        ),
        "contrastkit export runs/r18 --format timm --out runs/r18/timm-resnet18.safetensors": Command(
            after=(R18_RUN,), expect="timm.create_model", slow=R18_SLOW
        ),
        "contrastkit export runs/r18 --format onnx --out runs/r18/resnet18.onnx": Command(
            after=(R18_RUN,), expect="parity with contrastkit embed", slow=R18_SLOW
        ),
        # the README's run (the same command): linked, not trained again
        ML100K_RUN: Command(replace={"PATH/TO/ml-100k": str(ML100K)}, sets=["train.epochs=1"], data=ML100K, expect="popularity"),
        "contrastkit export runs/ml100k --format arrays --out runs/ml100k/embeddings.parquet": Command(
            after=(ML100K_RUN,), data=ML100K, expect="embeddings"
        ),
        SICK_RUN: Command(
            sets=["train.max_steps=4", "eval.baselines=false", f"text.data_root={SICK}"], data=SICK,
            expect="STS spearman", slow=SICK_SLOW,
        ),
        "contrastkit export runs/sick --format huggingface --out runs/sick/hf": Command(
            after=(SICK_RUN,), data=SICK, expect="SentenceTransformer", slow=SICK_SLOW
        ),
        # the README's run (the same command): linked, not trained again
        W2V_RUN: W2V_COMMAND,
        "contrastkit export runs/w2v --format word2vec --out runs/w2v/vectors.txt": Command(
            after=(W2V_RUN,), expect="word2vec text format"
        ),
        "contrastkit serve runs/ml100k --port 8766": Command(
            after=(ML100K_RUN,), data=ML100K, serves="/api/recommend/196", expect='"score"',
            slow="covered: tests/serve/test_serve.py starts `contrastkit serve` on a recommendation run, fetches a "
            "page and stops it with Ctrl-C (test_cli_serves_until_ctrl_c); its /api/recommend answers in "
            "test_recsys_run_history_and_recommendations",
        ),
        'contrastkit train digits-simclr --set "train.loggers=[csv, tensorboard, mlflow]" --out runs/tracked': Command(
            sets=["train.max_steps=2", *DIGITS_EVAL], expect="ssl",
            slow="covered: tests/training/test_loggers.py trains with train.loggers [csv, tensorboard, mlflow] and reads "
            "the MLflow run back (test_mlflow_records_every_step_once_across_a_resume)",
        ),
    },
    "docs/data.md": {
        "contrastkit prepare fashion-mnist --out stores/fm": Command(data=FASHION_MNIST, expect="store stores/fm"),
        "contrastkit train fashion-mnist-simclr --set data.name=store --set data.root=stores/fm --out runs/fm-store": Command(
            after=("contrastkit prepare fashion-mnist --out stores/fm",), sets=FM_QUICK, data=FASHION_MNIST, expect="ssl",
            slow="covered: training from a store runs in CI with the photos store of README.md and data.md "
            "(`contrastkit train cifar10-simclr --set data.name=store ...`) and in tests/data/test_prepare.py "
            "(test_train_on_a_store_matches_in_memory)",
        ),
        # README's (the same commands): linked, not run again
        PHOTOS_PREPARE: Command(replace={"PATH/TO/photos": "{photos}"}, expect="3 classes"),
        PHOTOS_RUN: Command(after=(PHOTOS_PREPARE,), sets=PHOTOS_QUICK, expect="ssl"),
        "contrastkit prepare 'PATH/TO/shards/train-{000000..000009}.tar' --out stores/shards --size 32": Command(
            replace={"PATH/TO/shards": "{shards}"}, expect="3 classes"
        ),
        "contrastkit train cifar10-simclr --set data.name=folder --set data.root=PATH/TO/photos --set data.stream=true "
        "--out runs/photos-stream": Command(
            replace={"PATH/TO/photos": "{photos}"}, sets=PHOTOS_QUICK, expect="ssl",
            slow="covered: tests/data/test_stream.py::test_train_and_evaluate_streamed_folder trains and evaluates "
            "`contrastkit train` on a folder with data.stream=true (decoding workers started: half a minute)",
        ),
        "contrastkit train amazon-beauty-lightgcn --set recsys.root=PATH/TO/amazon-beauty --out runs/beauty": Command(
            replace={"PATH/TO/amazon-beauty": str(SHARED_DATA / "amazon-beauty")}, sets=["train.max_steps=3"],
            data=SHARED_DATA / "amazon-beauty", expect="popularity",
            slow="the full split: loading and full-ranking evaluation of 22k users take minutes "
            "(tests/data/test_recsys_given.py trains on given splits in CI)",
        ),
        "contrastkit train sick-simcse --set text.train_file=PATH/TO/corpus.txt --set text.lazy=true --set text.workers=2 "
        "--out runs/simcse-lazy": Command(
            replace={"PATH/TO/corpus.txt": "{corpus}"},
            sets=["train.max_steps=4", "eval.baselines=false", f"text.data_root={SICK}"],
            data=SICK, expect="STS spearman", slow=SICK_SLOW,
        ),
        PAIRS_RUN: Command(
            sets=["train.max_steps=4", "eval.baselines=false", f"text.data_root={SICK}"], data=SICK,
            expect="best dev_sts_spearman", slow=PAIRS_SLOW,
        ),
        PAIRS_MINE: Command(after=(PAIRS_RUN,), data=SICK, expect="(anchor, positive, negative) rows", slow=PAIRS_SLOW),
        "contrastkit train sick-pairs --set text.train_file=runs/pairs/triples.tsv --set text.train_filter=null "
        '--set "text.train_columns=[anchor, positive, negative]" --out runs/pairs-hard': Command(
            after=(PAIRS_RUN, PAIRS_MINE), sets=["train.max_steps=4", "eval.baselines=false", f"text.data_root={SICK}"],
            data=SICK, expect="STS spearman", slow=PAIRS_SLOW,
        ),
    },
    "docs/agents.md": {
        "contrastkit train cartpole-state --out runs/state": Command(
            sets=["rl.steps=100", "rl.eval_episodes=1"], expect="return"
        ),
        "contrastkit train cartpole-pixels-curl --out runs/curl": Command(sets=RL_QUICK, expect="state probe R²"),
        "contrastkit export runs/state --format sb3 --out runs/state/agent.zip": Command(
            after=("contrastkit train cartpole-state --out runs/state",), expect="DQN.load Q-values max abs diff"
        ),
    },
    "docs/generators.md": {
        "contrastkit train digits-contrad --out runs/gan-digits": Command(
            sets=GAN_QUICK, expect="discriminator linear probe",
            slow="covered: tests/tasks/test_gan.py::test_each_method_trains_and_evaluates_through_the_cli trains and "
            "evaluates `contrastkit train digits-contrad` (and its dcgan)",
        ),
        GAN_FM: Command(sets=GAN_QUICK, data=FASHION_MNIST, expect="not Inception"),
        "contrastkit train fashion-mnist-dcgan --out runs/dcgan": Command(
            sets=GAN_QUICK, data=FASHION_MNIST, expect="not Inception",
            slow="covered: the contrad one runs in CI, and tests/tasks/test_gan.py trains and evaluates dcgan",
        ),
        "contrastkit evaluate runs/contrad": Command(after=(GAN_FM,), data=FASHION_MNIST, expect="discriminator linear probe"),
        "contrastkit methods contrad": Command(expect="method.lambda_con = 1.0"),
    },
    "docs/sweep.md": {
        SWEEP_RUN: Command(
            replace={"--trials 8": "--trials 2"}, sets=SWEEP_QUICK, expect="on the test split",
        ),
        "contrastkit train sweeps/digits/best.yaml --out runs/digits-best": Command(
            after=(SWEEP_RUN,), expect="ssl",
        ),
        "contrastkit sweep --out sweeps/digits --resume --trials 12": Command(
            after=(SWEEP_RUN,), replace={"--trials 12": "--trials 3"}, expect="on the test split",
            slow="covered: tests/sweep/test_workers.py resumes a sweep killed with SIGKILL mid-trial",
        ),
        "contrastkit sweep digits-simclr --space method.temperature=0.05:0.5:log --trials 8 --jobs 2 --out sweeps/jobs": Command(
            replace={"--trials 8": "--trials 2"}, sets=SWEEP_QUICK, expect="on the test split",
            slow="covered: tests/sweep/test_workers.py runs `--jobs 2` on one SQLite study",
        ),
        "contrastkit sweep digits-simclr --space method.temperature=0.05:0.5:log --trials 40 --out /shared/sweeps/t "
        "--storage postgresql://user:password@db-host/sweeps --study temperature": Command(
            exempt="needs a PostgreSQL server (tests/sweep/test_workers.py runs two workers on one SQLite study)",
        ),
        "contrastkit sweep --out /shared/sweeps/t --worker --storage postgresql://user:password@db-host/sweeps": Command(
            exempt="needs a PostgreSQL server and a sweep started on it",
        ),
    },
    "docs/distributed.md": {
        "contrastkit train fashion-mnist-simclr --out runs/fm": Command(
            sets=FM_QUICK, data=FASHION_MNIST, expect="ssl", slow=FM_SLOW
        ),
        FM_RUN: Command(
            sets=FM_QUICK, data=FASHION_MNIST, expect="ssl",
            slow=NPROC_SLOW,
        ),
        "torchrun --standalone --nproc-per-node 8 -m contrastkit train fashion-mnist-simclr --out runs/fm8": Command(
            replace={"--nproc-per-node 8": "--nproc-per-node 2"},  # 8 processes want 8 GPUs
            sets=FM_QUICK, data=FASHION_MNIST, expect="ssl",
        ),
        "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST0:29400 --rdzv-id fm-job "
        "-m contrastkit train fashion-mnist-simclr --out /shared/runs/fm16": Command(
            replace={"--nproc-per-node 8": "--nproc-per-node 1", "HOST0:29400": "127.0.0.1:29431",
                     "/shared/runs/fm16": "runs/fm16"},  # two "machines" on this one
            sets=FM_QUICK, data=FASHION_MNIST, nodes=2, slow="two simulated machines", expect="ssl",
        ),
        "contrastkit train --out runs/fm2 --resume --nproc 2": Command(
            sets=["train.max_steps=2"], after=(FM_RUN,), data=FASHION_MNIST, expect="resumed runs/fm2 at step 1/2",
            slow="covered: tests/training/test_preemption.py resumes a SIGTERM-stopped `--nproc 2` run with "
            "`contrastkit train --out RUN --resume --nproc 2` (test_sigterm_under_nproc_2_stops_every_process_at_one_step)",
        ),
    },
}


def documented_commands() -> list[tuple[str, str]]:
    """(document, command) for every command of a ```bash block: continuation lines joined,
    a trailing comment dropped, runs of spaces made one."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", doc.read_text(), flags=re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                command = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
                if command:
                    found.append((str(doc.relative_to(REPO)), command))
    return found


def test_every_documented_command_has_a_test() -> None:
    documented = documented_commands()
    missing = [f"{doc}: {cmd}" for doc, cmd in documented if cmd not in COMMANDS.get(doc, {})]
    assert not missing, "documented commands without an entry in tests/test_docs.py COMMANDS:\n" + "\n".join(missing)
    stale = [f"{doc}: {cmd}" for doc, table in COMMANDS.items() for cmd in table if (doc, cmd) not in documented]
    assert not stale, "entries of COMMANDS no longer in the docs:\n" + "\n".join(stale)
    # a prerequisite is a command of the same document, run (not exempt), and not slower than what needs it
    for doc, table in COMMANDS.items():
        for cmd, spec in table.items():
            for before in spec.after:
                assert before in table and not table[before].exempt, f"{doc}: {cmd!r} runs after {before!r}"
                assert spec.slow or not table[before].slow, f"{doc}: {cmd!r} runs in CI but needs the slow {before!r}"


# ----------------------------------------------------------------------------- running them


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Sandbox:
    """One working folder per document; commands run once, in order, prerequisites first. A
    command that another document of this sandbox has run with the same arguments is not run
    again: its --out folder is linked into this document's folder."""

    def __init__(self, root: Path) -> None:
        from .text_helpers import make_corpus

        self.root = root
        self.done: dict[tuple[str, str], str] = {}
        self.ran: dict[tuple[str, ...], tuple[Path, str]] = {}  # argv → (folder, output)
        self.times: list[dict[str, object]] = []
        # the commands' environment: one thread per process, caches (GAN feature encoders) in the sandbox
        self.env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                    "XDG_CACHE_HOME": str(root / "cache"),
                    "HF_HOME": os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")}
        self.corpus = root / "corpus.txt"  # "any text file": generated sentences
        self.corpus.write_text("\n".join(make_corpus(3000)) + "\n")
        self.photos = root / "photos"  # "a folder of your images": generated, three colour classes
        rng = np.random.default_rng(0)
        for split, count in (("train", 40), ("test", 12)):
            for c, name in enumerate(("red", "green", "blue")):
                (self.photos / split / name).mkdir(parents=True)
                for i in range(count):
                    pixels = rng.integers(0, 80, (40, 48, 3)).astype(np.uint8)
                    pixels[..., c] += 150
                    Image.fromarray(pixels).save(self.photos / split / name / f"{i}.png")
        # "WebDataset-style tar shards": the photos' training images in ten shards, class name in .cls
        self.shards = root / "shards"
        self.shards.mkdir()
        files = sorted((self.photos / "train").glob("*/*.png"))
        for s in range(10):
            with tarfile.open(self.shards / f"train-{s:06d}.tar", "w") as tar:
                for path in files[s::10]:
                    tar.add(path, arcname=f"{path.parent.name}-{path.stem}.png")
                    label = io.BytesIO(path.parent.name.encode())
                    info = tarfile.TarInfo(f"{path.parent.name}-{path.stem}.cls")
                    info.size = len(label.getvalue())
                    tar.addfile(info, label)

    def run(self, doc: str, command: str) -> str:
        key = (doc, command)
        if key in self.done:
            return self.done[key]
        spec = COMMANDS[doc][command]
        for before in spec.after:
            self.run(doc, before)
        folder = self.root / Path(doc).stem
        folder.mkdir(parents=True, exist_ok=True)
        text = command
        for old, new in spec.replace.items():
            text = text.replace(old, new.format(repo=REPO, corpus=self.corpus, photos=self.photos, shards=self.shards))
        argv = shlex.split(text)
        sets = [x for s in spec.sets for x in ("--set", s)]
        same = (*argv, *sets, str(spec.nodes), spec.serves)
        wall, cpu = time.perf_counter(), _cpu_seconds()
        if same in self.ran and "--out" in argv:  # run by another document: link its output here
            other, out = self.ran[same]
            target = argv[argv.index("--out") + 1]
            (folder / target).parent.mkdir(parents=True, exist_ok=True)
            (folder / target).symlink_to(other / target)
        elif spec.serves:
            out = _serve(argv, folder, spec.serves, self.env)
        elif argv[0] == "contrastkit" and "--nproc" not in argv:
            out = _in_process(argv[1:] + sets, folder, self.env)
        elif argv[0] == "make":
            demo = " ".join(f"--set {shlex.quote(s)}" for s in spec.sets) + f" --out {folder / 'demo'}"
            out = _subprocess([*argv, f"DEMO_ARGS={demo}"], folder, self.env)
        else:
            out = _subprocess([*argv, *sets], folder, self.env, copies=spec.nodes)
        self.times.append({"doc": doc, "command": command, "linked": same in self.ran,
                           "wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(_cpu_seconds() - cpu, 2)})
        assert spec.expect in out, f"{command!r}: expected {spec.expect!r} in its output:\n{out[-3000:]}"
        self.ran.setdefault(same, (folder, out))
        self.done[key] = out
        return out

    def write_times(self) -> None:
        if TIMES and self.times:
            with open(TIMES, "a") as handle:
                handle.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in self.times)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in os.environ and one torch / BLAS thread while a command runs in this process."""
    from threadpoolctl import threadpool_limits

    before = {k: os.environ.get(k) for k in env}
    threads = torch.get_num_threads()
    os.environ.update(env)
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _in_process(argv: list[str], folder: Path, env: dict[str, str]) -> str:
    buffer = io.StringIO()
    here = os.getcwd()
    os.chdir(folder)
    try:
        with _environment(env), contextlib.redirect_stdout(buffer):
            code = main(argv)
    finally:
        os.chdir(here)
    assert code == 0, f"contrastkit {' '.join(argv)} exited with {code}:\n{buffer.getvalue()[-3000:]}"
    return buffer.getvalue()


def _child_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _subprocess(argv: list[str], folder: Path, env: dict[str, str], copies: int = 1) -> str:
    procs = [
        subprocess.Popen(argv, cwd=folder, env=_child_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(copies)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"{' '.join(argv)} exited with {p.returncode}:\n{out[-3000:]}"
    return "\n".join(outputs)


def _serve(argv: list[str], folder: Path, path: str, env: dict[str, str]) -> str:
    """Start a serving command as written, wait for its URL, GET ``path``, then Ctrl-C it: it must
    stop quietly with exit code 0. Returns what it printed and the page it served."""
    import http.client
    import signal

    proc = subprocess.Popen(argv, cwd=folder, env=_child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        while not (found := re.search(r"http://([\w.]+):(\d+)/", lines[-1] if lines else "")):
            line = proc.stdout.readline()
            assert line, f"{' '.join(argv)} ended before serving:\n{''.join(lines)}{proc.communicate()[1][-3000:]}"
            lines.append(line)
        conn = http.client.HTTPConnection(found.group(1), int(found.group(2)), timeout=60)
        conn.request("GET", path)
        response = conn.getresponse()
        page = response.read().decode(errors="replace")
        assert response.status == 200, f"GET {path}: {response.status}\n{page[:2000]}"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"{' '.join(argv)} exited with {proc.returncode} after Ctrl-C:\n{err[-3000:]}"
    return "".join(lines) + rest + page


def make_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path_factory.mktemp("docs"))
    yield sandbox
    sandbox.write_times()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    yield from make_sandbox(tmp_path_factory)


def cases(readme_half: bool) -> list[object]:
    """The commands of README.md and the documents that share its runs (``README_HALF``), or
    (``readme_half=False``) the other documents' (tests/test_docs_guides.py: a file of its own,
    so that the two halves run on different pytest workers)."""
    cases: list[object] = []
    for doc, table in COMMANDS.items():
        if (doc in README_HALF) != readme_half:
            continue
        for command, spec in table.items():
            marks = [pytest.mark.slow] if spec.slow else []
            cases.append(pytest.param(doc, command, marks=marks, id=f"{Path(doc).stem}: {command[:70]}"))
    return cases


@pytest.mark.parametrize(("doc", "command"), cases(readme_half=True))
def test_documented_command_runs_as_written(doc: str, command: str, sandbox: Sandbox) -> None:
    run_documented(doc, command, sandbox)


def run_documented(doc: str, command: str, sandbox: Sandbox) -> None:
    spec = COMMANDS[doc][command]
    if spec.exempt:
        pytest.skip(f"not run: {spec.exempt}")
    needs = [spec.data, *(COMMANDS[doc][b].data for b in spec.after)]
    for path in needs:
        if path is not None and not path.exists():
            pytest.skip(f"needs {path} (absent on this machine)")
    sandbox.run(doc, command)
