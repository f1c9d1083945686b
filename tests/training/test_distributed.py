"""DDP on CPU with gloo and 2 processes: one step of every image method, and of the sentence
methods (triples, scored pairs; with and without GradCache), on 2 x B samples spread over 2
ranks equals one process on the concatenated 2B batch (loss and gradients, BatchNorm removed,
since per-process BatchNorm statistics differ by design). Stopping and resuming 2-process runs
is tested in tests/test_preemption.py."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from contrastkit.methods import BYOL, DINO, NNCLR, BarlowTwins, MoCoV2, MoCoV3, SimCLR, SimSiam, SupCon, SwAV, VICReg
from contrastkit.methods.scored_pairs import AnglE, CoSENT
from contrastkit.methods.simcse import SimCSE

B = 6  # samples per rank
METHODS = ["simclr", "simclr_queue", "supcon", "moco_v2", "moco_v2_in_batch", "moco_v3", "byol", "simsiam", "barlow_twins",
           "vicreg", "swav", "swav_queue", "dino", "nnclr", "simclr_multicrop", "supcon_multicrop", "byol_multicrop",
           # sentence pairs / triples (in-batch negatives of every rank), scored pairs (the global batch ranked on
           # every rank), each also through GradCache (its cached gradients meet DDP's hooks in one backward)
           "simcse_triples", "simcse_triples_gradcache", "cosent", "cosent_gradcache", "angle"]
TEXT = {"simcse_triples", "simcse_triples_gradcache", "cosent", "cosent_gradcache", "angle"}


class _TextEncoder(nn.Module):
    """Token embeddings, their mean over the attention mask, a linear layer: (B, L) ids → (B, 6)."""

    out_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.out = nn.Embedding(20, 8), nn.Linear(8, 6)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(self.embed.weight.dtype)
        return self.out((self.embed(ids) * m).sum(1) / m.sum(1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _strip_bn(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _strip_bn(child)
    return module


def _encoder() -> nn.Module:
    enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    enc.out_dim = 16  # type: ignore[assignment]
    return enc


def _queue(model: nn.Module) -> Any:
    """The method's queue of keys (NNCLR: its support set), or None."""
    return getattr(model, "queue", None) if hasattr(model, "queue") else getattr(model, "support", None)


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    head = {"projection_dim": 5, "projection_hidden_dim": 7}
    models: dict[str, Any] = {
        "simclr": lambda: SimCLR(_encoder(), 16, **head, temperature=0.3),
        "simclr_queue": lambda: SimCLR(_encoder(), 16, **head, temperature=0.3, queue_size=40),
        "supcon": lambda: SupCon(_encoder(), 16, **head, temperature=0.3),
        "moco_v2": lambda: MoCoV2(_encoder(), 16, **head, queue_size=40, temperature=0.3),
        "moco_v2_in_batch": lambda: MoCoV2(_encoder(), 16, **head, queue_size=40, in_batch_negatives=True),
        "moco_v3": lambda: MoCoV3(_encoder(), 16, **head, predictor_hidden_dim=6),
        "byol": lambda: BYOL(_encoder(), 16, **head, predictor_hidden_dim=6),
        "simsiam": lambda: SimSiam(_encoder(), 16, **head, predictor_hidden_dim=3),
        "barlow_twins": lambda: BarlowTwins(_encoder(), 16, **head),
        "vicreg": lambda: VICReg(_encoder(), 16, **head),
        "swav": lambda: SwAV(_encoder(), 16, **head, prototypes=8),
        "swav_queue": lambda: SwAV(_encoder(), 16, **head, prototypes=8, queue_length=40),
        "dino": lambda: DINO(_encoder(), 16, **head, out_dim=9),
        "nnclr": lambda: NNCLR(_encoder(), 16, **head, predictor_hidden_dim=6, support_set_size=40),
        "simcse_triples": lambda: SimCSE(_TextEncoder(), temperature=0.1),
        "simcse_triples_gradcache": lambda: SimCSE(_TextEncoder(), temperature=0.1, gradcache_chunk=4),
        "cosent": lambda: CoSENT(_TextEncoder()),
        "cosent_gradcache": lambda: CoSENT(_TextEncoder(), gradcache_chunk=4),
        "angle": lambda: AnglE(_TextEncoder()),
    }
    model = _strip_bn(models[name.removesuffix("_multicrop")]()).double()  # float64: compare to 1e-5 without float32 noise
    if hasattr(model, "diagnostics"):
        model.diagnostics = False
    queue = _queue(model)
    if queue is not None:  # a queue (NNCLR: support set) already holding keys, the same in every process
        queue.enqueue(torch.nn.functional.normalize(torch.randn(40, 5, generator=torch.Generator().manual_seed(1)), dim=1))
    return model


def _batch(name: str) -> dict[str, Any]:
    """Two 6 x 6 views; a ``*_multicrop`` method's batch adds three 3 x 3 local views. Text:
    token ids and masks of (anchor, positive, hard negative) or of scored (sentence 1, 2) pairs."""
    g = torch.Generator().manual_seed(2)
    if name in TEXT:
        count = 3 if name.startswith("simcse") else 2
        ids = [torch.randint(1, 20, (2 * B, 5), generator=g) for _ in range(count)]
        masks = [torch.ones(2 * B, 5, dtype=torch.long) for _ in range(count)]
        for mask in masks:
            mask[::3, 3:] = 0  # padded rows
        scores = torch.tensor([4.0, 1.0, 3.0, 2.5, 0.5, 5.0, 2.0, 3.5, 4.5, 1.5, 0.0, 3.0], dtype=torch.float64)
        return {"views": ids, "masks": masks, "scores": scores}
    x1 = torch.randn(2 * B, 1, 6, 6, generator=g, dtype=torch.float64)
    x2 = torch.randn(2 * B, 1, 6, 6, generator=g, dtype=torch.float64)
    local = [torch.randn(2 * B, 1, 3, 3, generator=g, dtype=torch.float64) for _ in range(3 * name.endswith("_multicrop"))]
    labels = torch.tensor([0, 1, -1, 0, 2, -1, 1, 1, -1, 2, 0, -1])
    return {"views": [x1, x2, *local], "labels": labels, "global_views": 2}


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from contrastkit.training.steps import _TrainingStep

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    rows = slice(rank * B, (rank + 1) * B)
    results = {}
    for name in METHODS:
        full = _batch(name)
        local = {key: [v[rows] for v in value] if isinstance(value, list) else value[rows] if torch.is_tensor(value)
                 else value for key, value in full.items()}
        model = _model(name)
        ddp = DistributedDataParallel(_TrainingStep(model))
        loss = ddp(local).loss
        loss.backward()
        queue = _queue(model)
        results[name] = {
            "loss": loss.detach(),
            "grads": _grads(model),
            "queue": queue.keys().clone() if queue is not None else None,
            "center": model.center.clone() if name == "dino" else None,
        }
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("name", METHODS)
def test_two_ranks_equal_one_process_on_the_concatenated_batch(name: str, ddp_results: list[dict[str, Any]]) -> None:
    model = _model(name)
    loss = model.training_step(_batch(name)).loss
    loss.backward()
    ref = _grads(model)
    r0, r1 = ddp_results[0][name], ddp_results[1][name]
    # mean of the per-rank losses is the loss of the global batch
    torch.testing.assert_close((r0["loss"] + r1["loss"]) / 2, loss.detach(), rtol=1e-5, atol=1e-8)
    assert set(r0["grads"]) == set(ref) and ref
    for key, g in ref.items():
        for got in (r0["grads"][key], r1["grads"][key]):
            err = float((got - g).abs().max())
            assert torch.allclose(got, g, rtol=1e-5, atol=1e-8), f"{name} {key}: max abs diff {err:.3g}"
    queue = _queue(model)
    if queue is not None:  # both ranks enqueued the gathered keys: the same queue as one process
        torch.testing.assert_close(r0["queue"], queue.keys())
        torch.testing.assert_close(r1["queue"], queue.keys())
    if name == "dino":  # DINO's centre: the mean of the teacher's outputs over the global batch
        torch.testing.assert_close(r0["center"], model.center)
        torch.testing.assert_close(r1["center"], model.center)


def test_nproc_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from contrastkit.cli import main

    code = main(["train", "digits-simclr", "--nproc", "3", "--out", str(tmp_path / "x"), "--set", "train.batch_size=64"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not divisible by --nproc 3" in err
    assert main(["train", "--nproc", "0"]) == 2
