"""``gather_distributed=True`` on the losses that take their negatives from the batch: two gloo
processes, each with half of a fixed batch, give the loss (mean over the processes, as DDP
averages gradients) and the gradients of one process on the concatenated batch; without a
process group the option changes nothing. (The two ranks are forked, as in
tests/tasks/test_clip.py: spawned ones would spend seconds importing torch again.)"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from contrastkit.errors import UserError
from contrastkit.losses import (
    AnglELoss,
    InfoNCELoss,
    NTXentLoss,
    SigLIPLoss,
    SupConLoss,
    cosent_loss,
    info_nce,
    siglip_loss,
)

N, D, RANKS = 8, 5, 2
LOCAL = N // RANKS
# every label occurs on both ranks or twice on one: each row has a positive in the global batch
LABELS = torch.tensor([0, 1, 2, 0, 3, 1, 2, 3])
KEY_LABELS = torch.tensor([3, 0, 2, 1, 1, 3, 0, 2])
LOCAL_INDEX = torch.tensor([1, 0, 3, -1])  # a positive among this rank's keys, -1: none
SCORES = torch.tensor([4.0, 1.0, 3.0, 2.5, 0.5, 5.0, 2.0, 3.5], dtype=torch.float64)  # scored pairs: CoSENT, AnglE
LOCAL_MASK = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)


def _data() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, D, generator=gen, dtype=torch.float64), torch.randn(N, D, generator=gen, dtype=torch.float64)
    queue = torch.randn(6, D, generator=gen, dtype=torch.float64)  # the same on every rank (a MoCo queue)
    return x, y, queue


def _part(t: Tensor, rank: int | None) -> Tensor:
    """This rank's rows of a global per-sample tensor (all of them for one process)."""
    return t if rank is None else t[rank * LOCAL : (rank + 1) * LOCAL]


def _index(rank: int | None) -> Tensor:
    """LOCAL_INDEX on each rank; one process: the same positives in the concatenated keys."""
    if rank is not None:
        return LOCAL_INDEX
    return torch.cat([torch.where(LOCAL_INDEX >= 0, LOCAL_INDEX + r * LOCAL, LOCAL_INDEX) for r in range(RANKS)])


def _mask(rank: int | None) -> Tensor:
    return LOCAL_MASK if rank is not None else torch.block_diag(*[LOCAL_MASK] * RANKS)


Case = Callable[[Tensor, Tensor, Tensor, Tensor, "int | None", bool], Tensor]
# case(x, y, s, queue, rank, gather): the loss of the rows x, y (s: a scale, queue: extra negatives)
# of rank `rank` (None: the whole batch), with gather_distributed=gather
CASES: dict[str, Case] = {
    "info_nce": lambda x, y, s, q, r, g: info_nce(x, y, temperature=0.1, gather_distributed=g),
    "info_nce_index": lambda x, y, s, q, r, g: info_nce(
        x, y, positive_index=_index(r), temperature=0.2, gather_distributed=g
    ),
    "info_nce_labels": lambda x, y, s, q, r, g: info_nce(
        x, y, labels=_part(LABELS, r), key_labels=_part(KEY_LABELS, r), gather_distributed=g
    ),
    "info_nce_self_labels": lambda x, y, s, q, r, g: info_nce(
        torch.cat([x, y]),
        labels=torch.cat([_part(LABELS, r), _part(KEY_LABELS, r)]),
        temperature=0.3,
        gather_distributed=g,
    ),
    "info_nce_self_mask": lambda x, y, s, q, r, g: info_nce(
        x, positive_mask=_mask(r), temperature=0.5, similarity="dot", gather_distributed=g
    ),
    "info_nce_queue": lambda x, y, s, q, r, g: info_nce(
        x, y, negative_keys=q, temperature=0.1, chunk_size=3, gather_distributed=g
    ),
    "info_nce_temperature_tensor": lambda x, y, s, q, r, g: info_nce(x, y, temperature=s.exp(), gather_distributed=g),
    "InfoNCELoss": lambda x, y, s, q, r, g: InfoNCELoss(0.1, gather_distributed=g)(x, y),
    "NTXentLoss": lambda x, y, s, q, r, g: NTXentLoss(0.5, gather_distributed=g)(x, y),
    "SupConLoss": lambda x, y, s, q, r, g: SupConLoss(0.1, gather_distributed=g)(
        torch.stack([x, y], dim=1), _part(LABELS, r)
    ),
    "SupConLoss_no_labels": lambda x, y, s, q, r, g: SupConLoss(0.1, gather_distributed=g)(
        torch.stack([x, y], dim=1)
    ),
    "siglip_loss": lambda x, y, s, q, r, g: siglip_loss(x, y, s.exp(), -1.0, gather_distributed=g),
    "SigLIPLoss": lambda x, y, s, q, r, g: SigLIPLoss(3.0, -1.0, gather_distributed=g)(x, y, _part(LABELS, r)),
    # the scored-pair losses rank every pair against every other: each process computes the global batch's loss
    "cosent_loss": lambda x, y, s, q, r, g: cosent_loss(x, y, _part(SCORES, r), gather_distributed=g),
    "AnglELoss": lambda x, y, s, q, r, g: AnglELoss(gather_distributed=g)(  # even widths: the angle term's halves
        x[:, :4], y[:, :4], _part(SCORES, r), _part(SCORES >= 3, r)
    ),
}


def _loss_and_grads(name: str, rank: int | None) -> Tensor:
    """[loss, d/dx, d/dy, d/ds] of a case, flattened; x and y are this rank's rows."""
    x, y, queue = _data()
    xr, yr = _part(x, rank).clone().requires_grad_(True), _part(y, rank).clone().requires_grad_(True)
    s = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    loss = CASES[name](xr, yr, s, queue, rank, rank is not None)
    loss.backward()
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in (xr, yr, s)]
    return torch.cat([loss.detach().double().reshape(1)] + [g.flatten() for g in grads])


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # a forked child: no OpenMP pool of the parent's
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=RANKS)
    try:
        results = {name: _loss_and_grads(name, rank) for name in CASES}
        # the same loss without gathering: only this rank's keys (the test can tell the two apart)
        x, y, _ = _data()
        results["local"] = info_nce(_part(x, rank), _part(y, rank), temperature=0.1).reshape(1)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Tensor]]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("gather")
    mp.start_processes(_worker, args=(str(out / "init"), str(out)), nprocs=RANKS, start_method="fork")
    return [torch.load(out / f"rank{r}.pt") for r in range(RANKS)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_process_on_the_concatenated_batch(name: str, two_ranks: list[dict[str, Tensor]]) -> None:
    want = _loss_and_grads(name, None)
    loss = sum(ranks[name][0] for ranks in two_ranks) / RANKS  # DDP: the mean over processes
    torch.testing.assert_close(loss, want[0], rtol=1e-5, atol=1e-7)
    width = LOCAL * D
    gx, gy = want[1 : 1 + N * D].view(N, D), want[1 + N * D : 1 + 2 * N * D].view(N, D)
    gs = want[-1]
    # DDP averages the gradients over processes: each rank's rows get (sum over ranks) / RANKS
    for r, ranks in enumerate(two_ranks):
        got = ranks[name][1:] / RANKS
        torch.testing.assert_close(got[:width].view(LOCAL, D), gx[r * LOCAL : (r + 1) * LOCAL], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got[width : 2 * width].view(LOCAL, D), gy[r * LOCAL : (r + 1) * LOCAL], rtol=1e-5, atol=1e-7)
    # a parameter (the scale) is on every rank: DDP's average of its gradient is the global one
    torch.testing.assert_close(sum(ranks[name][-1] for ranks in two_ranks) / RANKS, gs, rtol=1e-5, atol=1e-7)
    # sanity check: the loss of the unused keys of the global batch is a different number
    local = sum(ranks["local"][0] for ranks in two_ranks) / RANKS
    assert not torch.allclose(local, _loss_and_grads("info_nce", None)[0])


@pytest.mark.parametrize("name", list(CASES))
def test_without_a_process_group_gathering_changes_nothing(name: str) -> None:
    x, y, queue = _data()
    s = torch.tensor(0.7, dtype=torch.float64)
    gathered = CASES[name](x, y, s, queue, None, True)
    torch.testing.assert_close(gathered, CASES[name](x, y, s, queue, None, False), rtol=0, atol=0)


def test_gathering_rejects_negative_weights_and_checks_the_local_positives(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("contrastkit.losses.info_nce")  # the module (the package's name is the function)
    monkeypatch.setattr(module, "world", lambda: (0, 2))  # as if under 2 processes (the checks come first)
    x, y, _ = _data()
    with pytest.raises(UserError, match="negative_weights cannot be combined with gather_distributed"):
        info_nce(x, y, negative_weights=torch.ones(N, N), gather_distributed=True)
    with pytest.raises(UserError, match=r"positive_index values must be in \[-1, 8\)"):
        info_nce(x, y, positive_index=torch.full((N,), 9), gather_distributed=True)
    with pytest.raises(UserError, match="must not point a row at itself"):
        info_nce(x, positive_index=torch.arange(N), gather_distributed=True)
