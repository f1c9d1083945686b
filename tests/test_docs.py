"""Docs as tests: every shell command of README.md and docs/*.md runs here exactly as written.

The only changes are the overrides in ``COMMANDS`` below, next to each command: they shorten
long runs (steps, epochs, evaluation sample counts) or fill in a placeholder. A command added
to the docs without an entry here fails ``test_every_documented_command_has_a_test``. Commands
that need data which is not always present (Fashion-MNIST, MovieLens, SICK) skip with the
reason when it is absent; benchmark commands that need their anchor environments, or take
minutes, are marked ``slow`` (``pytest -m slow``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrastkit.cli import main

from .conftest import FASHION_MNIST, SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

# Fashion-MNIST runs (60k / 10k images), shortened: 4 steps, probes of the SSL encoder on 1,000 /
# 200 images with one draw per few-label probe; no baselines, fine-tuning or pictures (each has
# its own test on digits)
FM_QUICK = [
    "train.max_steps=4", "eval.max_train_samples=1000", "eval.max_test_samples=200", "eval.finetune=false",
    "eval.baselines=false", "eval.plots=false", "eval.few_label_draws=1",
]
# digits runs: one draw per few-label probe instead of five (the probes' L-BFGS fits are most of
# a digits evaluation on 2 cores)
DIGITS_EVAL = ["eval.few_label_draws=1"]
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
    slow: str = ""  # why it runs only with -m slow
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
PHOTOS_QUICK = ["train.max_steps=3", "train.batch_size=8", "eval.finetune=false", "eval.baselines=false", *DIGITS_EVAL]
RL_QUICK = [
    "rl.steps=120", "rl.learning_starts=40", "rl.train_freq=10", "rl.gradient_steps=4", "rl.eval_every=60",
    "rl.eval_episodes=2", "rl.probe_steps=150", "rl.buffer_size=300", "rl.height=24", "rl.width=48",
    "rl.crop_margin=2", "train.batch_size=16",
]
GAN_QUICK = ["train.max_steps=20", "gan.feature_steps=5", "gan.eval_samples=200", "gan.probe_samples=300"]
GAN_FM = "contrastkit train fashion-mnist-contrad --out runs/contrad"
ANCHOR = "/path/to/venv-with-lightly/bin/python"
SICK_SLOW = "MiniLM encodes SICK's 9k sentences: a minute (tests/test_text_cli.py runs the same on tiny data)"
ST_ANCHOR = "/path/to/venv-with-sentence-transformers/bin/python"
COMMANDS: dict[str, dict[str, Command]] = {
    "README.md": {
        "make demo": Command(
            replace={"make demo": "make -C {repo} demo"},
            sets=["train.max_steps=20", "eval.tsne_points=300", *DIGITS_EVAL],  # through DEMO_ARGS
            expect="accuracy (%) on the test split",
        ),
        "make test": Command(exempt="the command that runs this test suite (CI runs it)"),
        "source .venv/bin/activate": Command(exempt="a shell builtin; the tests call the venv's own contrastkit"),
        "contrastkit doctor": Command(expect="optional extras"),
        "contrastkit recipes": Command(expect="digits-simclr"),
        "contrastkit train fashion-mnist-simclr --set train.epochs=1 --out runs/fm": Command(
            sets=FM_QUICK, data=FASHION_MNIST, expect="ssl"
        ),
        DIGITS_RUN: Command(sets=["train.max_steps=30", *DIGITS_EVAL], expect="accuracy (%) on the test split"),
        "contrastkit train --out runs/d --resume": Command(
            sets=["train.max_steps=40", *DIGITS_EVAL], after=(DIGITS_RUN,), expect="resumed runs/d at step 30/40"
        ),
        "contrastkit evaluate runs/d": Command(sets=DIGITS_EVAL, after=(DIGITS_RUN,), expect="raw_pixels"),
        "contrastkit embed runs/d --data digits:test --out feats.npy": Command(after=(DIGITS_RUN,), expect="wrote 360 × 128"),
        "contrastkit methods byol": Command(expect="method.momentum_final = 1.0"),
        BYOL_RUN: Command(
            sets=["train.max_steps=20", *DIGITS_EVAL], expect="ssl"
        ),
        "contrastkit compare digits-simclr digits-moco-v2 digits-moco-v3 digits-byol digits-simsiam "
        "digits-barlow-twins digits-vicreg digits-supcon --budget-minutes 1 --out runs/cmp": Command(
            slow="eight recipes for a minute each (tests/test_compare.py runs compare in CI)", expect="supcon"
        ),
        "contrastkit train fashion-mnist-supcon-1pct --out runs/fm-1pct": Command(
            sets=FM_QUICK, data=FASHION_MNIST, expect="labels used"
        ),
        "contrastkit train digits-simclr --nproc 2 --out runs/d2": Command(
            sets=["train.max_steps=10", *DIGITS_EVAL], expect="accuracy (%) on the test split"
        ),
        "contrastkit train ml100k-lightgcn --set recsys.root=PATH/TO/ml-100k --out runs/ml100k": Command(
            replace={"PATH/TO/ml-100k": str(ML100K)}, sets=["train.epochs=3"], data=ML100K, expect="popularity"
        ),
        "contrastkit train text-word2vec --set sequences.text_file=PATH/TO/corpus.txt --out runs/w2v": Command(
            replace={"PATH/TO/corpus.txt": "{corpus}"}, sets=["sequences.min_count=2", "train.epochs=2"],
            expect="tokens/s",
        ),
        "contrastkit similar runs/w2v --item doctor --k 5": Command(
            after=("contrastkit train text-word2vec --set sequences.text_file=PATH/TO/corpus.txt --out runs/w2v",),
            expect="5 items most similar to item doctor",
        ),
        "contrastkit train ml100k-item2vec --set recsys.root=PATH/TO/ml-100k --out runs/i2v": Command(
            replace={"PATH/TO/ml-100k": str(ML100K)}, sets=["train.epochs=3"], data=ML100K, expect="popularity"
        ),
        "contrastkit train fashion-mnist-novel-fewshot --out runs/fewshot": Command(
            sets=[*FM_QUICK, "eval.max_test_samples=1000", "eval.episodes=50"], data=FASHION_MNIST, expect="5-way 5-shot"
        ),
        "contrastkit recommend runs/ml100k --user 196 --k 5": Command(
            after=("contrastkit train ml100k-lightgcn --set recsys.root=PATH/TO/ml-100k --out runs/ml100k",),
            data=ML100K, expect="top 5 for user 196",
        ),
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
            after=(DIGITS_RUN,), serves="/api/neighbours/0", expect='"score"'
        ),
        PHOTOS_PREPARE: Command(replace={"PATH/TO/photos": "{photos}"}, expect="3 classes"),
        PHOTOS_RUN: Command(after=(PHOTOS_PREPARE,), sets=PHOTOS_QUICK, expect="ssl"),
        "contrastkit index runs/sick --data sick:test": Command(
            after=(SICK_RUN,), data=SICK, expect="indexed", slow=SICK_SLOW
        ),
        'contrastkit search runs/sick --query "A man is playing a guitar" --k 3': Command(
            after=(SICK_RUN, "contrastkit index runs/sick --data sick:test"), data=SICK, expect="text query",
            slow=SICK_SLOW,
        ),
    },
    "docs/benchmarks.md": {
        f"python benchmarks/fashion_mnist_budget.py --minutes 10 --out runs/bench-fm --anchor-python {ANCHOR}": Command(
            replace={ANCHOR: BENCH_PYTHON or ANCHOR, "python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"},
            slow="a 10-minute budget per library", data=Path(BENCH_PYTHON or ANCHOR),
        ),
        "python benchmarks/recsys_ml100k.py --root ../shared/data/ml-100k --out runs/bench-recsys "
        "--recbole-python /work/recbolevenv/bin/python": Command(
            replace={"python ": f"{sys.executable} ", "../shared/data/ml-100k": str(ML100K), "benchmarks/": f"{REPO}/benchmarks/"},
            slow="full training of eight models", data=Path("/work/recbolevenv/bin/python"),
        ),
        f"python benchmarks/text_simcse_sick.py --anchor-python {ST_ANCHOR}": Command(
            replace={ST_ANCHOR: BENCH_PYTHON or ST_ANCHOR, "python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"},
            slow="one SimCSE epoch per library", data=Path(BENCH_PYTHON or ST_ANCHOR),
        ),
        "contrastkit train fashion-mnist-clip --set train.num_threads=1 --out runs/fm-clip": Command(
            sets=["train.max_steps=4"], data=FASHION_MNIST, expect="zero-shot acc"
        ),
        "contrastkit compare digits-simclr digits-moco-v2 digits-moco-v3 digits-byol digits-simsiam "
        "digits-barlow-twins digits-vicreg digits-supcon --budget-minutes 1 --out runs/cmp": Command(
            slow="eight recipes for a minute each (tests/test_compare.py runs compare in CI)", expect="supcon"
        ),
        "python3 -m venv /work/benchvenv && /work/benchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 "
        "lightly==1.6.0 pytorch-metric-learning scikit-learn tqdm pyyaml safetensors matplotlib tensorboard "
        "faiss-cpu && /work/benchvenv/bin/pip install -e . --no-deps": Command(
            exempt="creates the benchmark environment (downloads several GB)"
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
        "/work/benchvenv/bin/python benchmarks/word2vec_gensim.py --seeds 3 --threads 2 --out runs/bench-w2v": Command(
            replace={"benchmarks/": f"{REPO}/benchmarks/"}, slow="word2vec and item2vec, 3 seeds, both libraries",
            data=Path("/work/benchvenv/bin/python"),
        ),
        "python benchmarks/export_inference.py --rounds 5 --out runs/bench-export": Command(
            replace={"python ": f"{sys.executable} ", "benchmarks/": f"{REPO}/benchmarks/"}, slow="minutes of timing",
            expect="onnxruntime",
        ),
        "/work/benchvenv/bin/python benchmarks/train_throughput.py --rounds 3 --steps 30 --warmup 5": Command(
            replace={"benchmarks/": f"{REPO}/benchmarks/"}, slow="minutes of timing", data=Path("/work/benchvenv/bin/python"),
        ),
        'python benchmarks/data_prepare.py --images /tmp/bench/jpegs30k --count 30000 --rounds 3 --out runs/bench-data-prepare-30k': Command(
            exempt="benchmark (minutes of timing); run by hand, figures in this document",
        ),
        'python benchmarks/data_prepare.py --images /tmp/bench/jpegs --per-image 500 --out runs/bench-data-prepare': Command(
            exempt="benchmark (minutes of timing); run by hand, figures in this document",
        ),
        'python benchmarks/data_train_throughput.py --images /tmp/bench/jpegs --rounds 3 --warmup 2 --steps 8 --out runs/bench-data-train': Command(
            exempt="benchmark (minutes of timing); run by hand, figures in this document",
        ),
        "python benchmarks/data_train_throughput.py --images /tmp/bench/jpegs --rounds 5 --warmup 3 --steps 20 "
        "--set model.width=8 --out runs/bench-data-train-w8": Command(
            exempt="benchmark (minutes of timing); run by hand, figures in this document",
        ),
        'python benchmarks/data_store_memory.py generate --store /tmp/bench/store1m --count 1000000': Command(
            exempt="benchmark (writes a 12 GB store); run by hand, figures in this document",
        ),
        'python benchmarks/data_store_memory.py measure --store /tmp/bench/store1m --control /tmp/bench/store50k --steps 300 --eval-samples 5000 --set model.width=8 --out runs/bench-data-store-memory': Command(
            exempt="benchmark (trains on the 12 GB store); run by hand, figures in this document",
        ),
        "python benchmarks/recsys_given_beauty.py --root ../shared/data/amazon-beauty --out runs/bench-beauty20b-ours --models "
        "lightgcn --epochs 20 --eval-every 5 --threads 1 &": Command(exempt="benchmark (12 minutes); run by hand"),
        "python benchmarks/recsys_given_beauty.py --root ../shared/data/amazon-beauty --out runs/bench-beauty20b-recbole --models "
        "lightgcn --no-ours --recbole-python /work/benchvenv-recbole/bin/python --epochs 20 --eval-every 5 --threads 1": Command(
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
        R18_RUN: Command(sets=["train.max_steps=2", "eval.baselines=false", *DIGITS_EVAL], expect="ssl"),
        "contrastkit export runs/r18 --format torchvision --out runs/r18/resnet18.safetensors": Command(
            after=(R18_RUN,), expect="strict=True"
        ),
        "contrastkit export runs/r18 --format timm --out runs/r18/timm-resnet18.safetensors": Command(
            after=(R18_RUN,), expect="timm.create_model"
        ),
        "contrastkit export runs/r18 --format onnx --out runs/r18/resnet18.onnx": Command(
            after=(R18_RUN,), expect="parity with contrastkit embed"
        ),
        ML100K_RUN: Command(replace={"PATH/TO/ml-100k": str(ML100K)}, sets=["train.epochs=3"], data=ML100K, expect="popularity"),
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
        "contrastkit serve runs/ml100k --port 8766": Command(
            after=(ML100K_RUN,), data=ML100K, serves="/api/recommend/196", expect='"score"'
        ),
        'contrastkit train digits-simclr --set "train.loggers=[csv, tensorboard, mlflow]" --out runs/tracked': Command(
            sets=["train.max_steps=6", *DIGITS_EVAL], expect="ssl"
        ),
    },
    "docs/data.md": {
        "contrastkit prepare fashion-mnist --out stores/fm": Command(data=FASHION_MNIST, expect="store stores/fm"),
        "contrastkit train fashion-mnist-simclr --set data.name=store --set data.root=stores/fm --out runs/fm-store": Command(
            after=("contrastkit prepare fashion-mnist --out stores/fm",), sets=FM_QUICK, data=FASHION_MNIST, expect="ssl",
            slow="a third Fashion-MNIST training (tests/test_prepare.py trains from a store in CI)",
        ),
        PHOTOS_PREPARE: Command(replace={"PATH/TO/photos": "{photos}"}, expect="3 classes"),
        PHOTOS_RUN: Command(after=(PHOTOS_PREPARE,), sets=PHOTOS_QUICK, expect="ssl"),
        "contrastkit prepare 'PATH/TO/shards/train-{000000..000009}.tar' --out stores/shards --size 32": Command(
            replace={"PATH/TO/shards": "{shards}"}, expect="3 classes"
        ),
        "contrastkit train cifar10-simclr --set data.name=folder --set data.root=PATH/TO/photos --set data.stream=true "
        "--out runs/photos-stream": Command(replace={"PATH/TO/photos": "{photos}"}, sets=PHOTOS_QUICK, expect="ssl"),
        "contrastkit train amazon-beauty-lightgcn --set recsys.root=PATH/TO/amazon-beauty --out runs/beauty": Command(
            replace={"PATH/TO/amazon-beauty": str(SHARED_DATA / "amazon-beauty")}, sets=["train.max_steps=3"],
            data=SHARED_DATA / "amazon-beauty", expect="popularity",
            slow="the full split: loading and full-ranking evaluation of 22k users take minutes "
            "(tests/test_recsys_given.py trains on given splits in CI)",
        ),
        "contrastkit train sick-simcse --set text.train_file=PATH/TO/corpus.txt --set text.lazy=true --set text.workers=2 "
        "--out runs/simcse-lazy": Command(
            replace={"PATH/TO/corpus.txt": "{corpus}"}, sets=["train.max_steps=4", "eval.baselines=false", f"text.data_root={SICK}"],
            data=SICK, expect="STS spearman", slow=SICK_SLOW,
        ),
    },
    "docs/agents.md": {
        "contrastkit train cartpole-state --out runs/state": Command(sets=["rl.steps=300", "rl.probe_steps=150"], expect="return"),
        "contrastkit train cartpole-pixels-curl --out runs/curl": Command(sets=RL_QUICK, expect="return"),
    },
    "docs/generators.md": {
        "contrastkit train digits-contrad --out runs/gan-digits": Command(sets=GAN_QUICK, expect="discriminator linear probe"),
        GAN_FM: Command(sets=GAN_QUICK, data=FASHION_MNIST, expect="not Inception"),
        "contrastkit train fashion-mnist-dcgan --out runs/dcgan": Command(
            sets=GAN_QUICK, data=FASHION_MNIST, expect="not Inception",
            slow="a second Fashion-MNIST GAN (the contrad one runs in CI)",
        ),
        "contrastkit evaluate runs/contrad": Command(
            sets=GAN_QUICK[1:], after=(GAN_FM,), data=FASHION_MNIST, expect="discriminator linear probe"
        ),
        "contrastkit methods contrad": Command(expect="method.lambda_con = 1.0"),
    },
    "docs/distributed.md": {
        "contrastkit train fashion-mnist-simclr --out runs/fm": Command(
            sets=FM_QUICK, data=FASHION_MNIST, expect="ssl",
            slow="the one-process Fashion-MNIST run of the README runs in CI; here the 2-process ones",
        ),
        FM_RUN: Command(sets=FM_QUICK, data=FASHION_MNIST, expect="ssl"),
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
            after=(FM_RUN,), data=FASHION_MNIST, expect="resumed runs/fm2 at step 4/4",
            slow="a second 2-process job (resume under --nproc is tested on digits in tests/test_preemption.py)",
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


# ----------------------------------------------------------------------------- running them


class Sandbox:
    """One working folder per document; commands run once, in order, prerequisites first."""

    def __init__(self, root: Path) -> None:
        from .text_helpers import make_corpus

        self.root = root
        self.done: dict[tuple[str, str], str] = {}
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
        # "WebDataset-style tar shards": the photos' training images in ten shards, class name in .txt
        self.shards = root / "shards"
        self.shards.mkdir()
        files = sorted((self.photos / "train").glob("*/*.png"))
        for s in range(10):
            with tarfile.open(self.shards / f"train-{s:06d}.tar", "w") as tar:
                for path in files[s::10]:
                    tar.add(path, arcname=f"{path.parent.name}-{path.stem}.png")
                    label = io.BytesIO(path.parent.name.encode())
                    info = tarfile.TarInfo(f"{path.parent.name}-{path.stem}.txt")
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
        if spec.serves:
            out = _serve(argv, folder, spec.serves)
        elif argv[0] == "contrastkit" and "--nproc" not in argv:
            out = _in_process(argv[1:] + [x for s in spec.sets for x in ("--set", s)], folder)
        elif argv[0] == "make":
            demo = " ".join(f"--set {s}" for s in spec.sets) + f" --out {folder / 'demo'}"
            out = _subprocess([*argv, f"DEMO_ARGS={demo}"], folder)
        else:
            sets = [x for s in spec.sets for x in ("--set", s)]
            out = _subprocess([*argv, *sets], folder, copies=spec.nodes)
        assert spec.expect in out, f"{command!r}: expected {spec.expect!r} in its output:\n{out[-3000:]}"
        self.done[key] = out
        return out


def _in_process(argv: list[str], folder: Path) -> str:
    buffer = io.StringIO()
    here = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(buffer):
            code = main(argv)
    finally:
        os.chdir(here)
    assert code == 0, f"contrastkit {' '.join(argv)} exited with {code}:\n{buffer.getvalue()[-3000:]}"
    return buffer.getvalue()


def _subprocess(argv: list[str], folder: Path, copies: int = 1) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    procs = [
        subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(copies)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"{' '.join(argv)} exited with {p.returncode}:\n{out[-3000:]}"
    return "\n".join(outputs)


def _serve(argv: list[str], folder: Path, path: str) -> str:
    """Start a serving command as written, wait for its URL, GET ``path``, then Ctrl-C it: it must
    stop quietly with exit code 0. Returns what it printed and the page it served."""
    import http.client
    import signal

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("docs"))


def cases(readme: bool) -> list[object]:
    """The README's commands, or (``readme=False``) the other documents' (tests/test_docs_guides.py:
    a file of its own, so that the two halves run on different pytest workers)."""
    cases: list[object] = []
    for doc, table in COMMANDS.items():
        if (doc == "README.md") != readme:
            continue
        for command, spec in table.items():
            marks = [pytest.mark.slow] if spec.slow else []
            cases.append(pytest.param(doc, command, marks=marks, id=f"{Path(doc).stem}: {command[:70]}"))
    return cases


@pytest.mark.parametrize(("doc", "command"), cases(readme=True))
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
