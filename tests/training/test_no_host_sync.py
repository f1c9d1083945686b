"""No step that does not log waits for the device: between fetching one batch and the next, no
method of any task converts a tensor to a Python value (``item``, ``float``, ``int``, ``bool``,
``tolist``, ``cpu``, ``numpy``) — neither in its training step nor in the loop around it
(progress, callbacks, the non-finite check). Logs stay tensors until a logged step. The batches
themselves may be prepared on the host (a permutation, a sampled negative): that is the loader's
work, between steps, and not counted. Nor are PyTorch's optimisers reading their own step
counters, which they keep on the host for exactly this reason (``torch.optim``'s ``_get_value``).

RL is left out on purpose: an agent acting in an environment needs each action on the host.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastkit.recipes import load_config
from contrastkit.tasks import RunContext, get_task
from contrastkit.training import Trainer

from ..conftest import tiny_overrides
from ..recsys_helpers import write_tiny_movielens
from ..text_helpers import write_text_data

pytestmark = pytest.mark.usefixtures("one_thread")

CONVERSIONS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")
STEPS = 4  # steps 1-3 do not log (train.log_every is larger); the last one does
QUIET = {"train.log_every": 1000, "train.max_steps": STEPS, "train.checkpoint_every": 1000,
         "train.progress": False, "train.loggers": "[csv]"}

IMAGE = ["simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins", "vicreg", "supcon", "swav", "dino", "nnclr",
         "simclr+crops", "byol+crops", "dino+crops"]
CROPS = "[{count: 2, size: 8, scale: [0.5, 1]}, {count: 3, size: 4, scale: [0.1, 0.4]}]"  # +crops: multi-crop views
RECSYS = ["mf", "lightgcn", "sgl", "simgcl", "xsimgcl"]
CASES = [*(f"image:{m}" for m in IMAGE), "text:simcse", "text:simcse_supervised", "text:cosent",
         "text:angle", "image_text:clip",
         "image_text:siglip", *(f"recsys:{m}" for m in RECSYS), "sequences:sgd", "sequences:torch_sgd",
         "sequences:sparse_adam",
         "gan:dcgan", "gan:contrad"]
UNITS = {"image": "images", "text": "texts", "image_text": "pairs", "recsys": "interactions",
         "sequences": "tokens", "gan": "images"}


def _sets(values: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def _config(case: str, data: Path) -> Any:
    task, method = case.split(":")
    if task == "image":
        name, _, crops = method.partition("+")
        views = {"data.crops": CROPS} if crops else {}
        return load_config("digits-simclr", tiny_overrides(**{"method.name": name, "train.batch_size": 32, **views, **QUIET}))
    if task in ("text", "image_text"):
        paths = write_text_data(data / "text", n=200)
        text = {"text.encoder": "tiny", "text.tiny_width": 32, "text.tiny_layers": 1, "text.max_length": 12}
        if task == "text":
            pairs = data / "pairs.tsv"
            lines = paths["corpus"].read_text().splitlines()
            pairs.write_text("a\tb\n" + "\n".join(f"{x}\t{y}" for x, y in itertools.pairwise(lines)) + "\n")
            source = ({"text.train_file": str(pairs), "text.train_columns": "[a, b]"} if method == "simcse_supervised"
                      else {"text.train_file": str(paths["sts"]), "text.train_columns": "[s1, s2, score]"}
                      if method in ("cosent", "angle") else {"text.train_file": str(paths["corpus"])})
            if method == "angle":  # Matryoshka sizes and batches without duplicates too
                source |= {"method.matryoshka_dims": "[32, 16]", "text.batch_sampler": "no_duplicates"}
            return load_config(None, _sets({"task": "text", "method.name": method, **text, **source,
                                             "train.batch_size": 16, **QUIET}))
        return load_config("fashion-mnist-clip", _sets({
            "data.name": "digits", "method.name": method, "model.width": 8, **text, "train.batch_size": 32, **QUIET,
        }))
    if task == "recsys":
        root = write_tiny_movielens(data / "ml")
        return load_config(f"ml100k-{method}", _sets({"recsys.root": str(root), "train.batch_size": 64,
                                                       "method.embedding_dim": 8, **QUIET}))
    if task == "sequences":
        paths = write_text_data(data / "text", n=200)
        optim = ({} if method == "sgd" else {"method.kernel": "torch"} if method == "torch_sgd"  # sgd: the numba kernel on CPU
                 else {"optim.name": method, "optim.lr": 0.01})
        return load_config("text-word2vec", _sets({"sequences.text_file": str(paths["corpus"]),
                                                   "sequences.min_count": 1, "method.embedding_dim": 8,
                                                   "train.batch_size": 256, **optim, **QUIET}))
    return load_config("digits-contrad", _sets({"method.name": method, "gan.z_dim": 8, "gan.g_width": 8,
                                                "gan.d_width": 8, "gan.feature_dim": 16, "gan.sample_every": 0,
                                                "train.batch_size": 32, "train.time_budget_minutes": "null", **QUIET}))


class Conversions:
    """Counts tensor → Python conversions per step while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.step = 0
        self.counts: Counter[int] = Counter()
        self.where: dict[int, list[str]] = {}

    def wrap(self, name: str, real: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self.on and f"{os.sep}torch{os.sep}optim{os.sep}" not in sys._getframe(1).f_code.co_filename:
                self.counts[self.step] += 1
                self.where.setdefault(self.step, []).append(name)
            return real(tensor, *args, **kwargs)

        return counted


class Watched:
    """The task's batches, with counting off while the next batch is made and on from the
    moment the loop has it until it asks for the next one."""

    def __init__(self, inner: Any, conversions: Conversions) -> None:
        self.inner, self.conversions = inner, conversions
        self.batch_size = getattr(inner, "batch_size", 1)

    def __len__(self) -> int:
        return len(self.inner)

    def units(self, batch: Any) -> int:
        return int(self.inner.units(batch))

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        source = self.inner.batches(epoch, start)
        while True:
            self.conversions.on = False
            try:
                batch = next(source)
            except StopIteration:
                return
            self.conversions.step += 1
            self.conversions.on = True
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return dict(self.inner.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


@pytest.mark.parametrize("case", CASES)
def test_steps_that_do_not_log_never_wait_for_the_device(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(case, tmp_path / "data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    task = get_task(cfg.task)(cfg)
    training = task.training(RunContext(cfg, run_dir, torch.device("cpu"), verbose=False))
    assert training.unit == UNITS[cfg.task]  # what the progress bar, the logs and results.json count
    conversions = Conversions()
    training.batches = Watched(training.batches, conversions)
    for name in CONVERSIONS:
        monkeypatch.setattr(torch.Tensor, name, conversions.wrap(name, getattr(torch.Tensor, name)))
    summary = Trainer(training, run_dir, cfg.train, device=torch.device("cpu"), optim=cfg.optim, progress=False).fit()
    monkeypatch.undo()
    assert summary.steps == STEPS and conversions.step == STEPS
    quiet_steps = {step: conversions.where.get(step, []) for step in range(1, STEPS)}
    assert all(not calls for calls in quiet_steps.values()), quiet_steps
    assert conversions.counts[STEPS] > 0  # the logged step turns its logs into numbers: the counter works
