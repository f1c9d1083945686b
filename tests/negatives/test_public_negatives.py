"""contrastkit.negatives as a user imports it: the queue, the mining strategy and the gathers,
its docstring's example, and the gathers being the identity outside torch.distributed."""

from __future__ import annotations

import re

import torch

import contrastkit.negatives as N
from contrastkit.negatives import distributed, mining, queue


def test_exports_are_the_implementations() -> None:
    assert N.KeyQueue is queue.KeyQueue and N.NegativeSampling is mining.NegativeSampling
    assert N.gather_with_grad is distributed.gather_with_grad and N.gather_no_grad is distributed.gather_no_grad
    assert sorted(N.__all__) == sorted(set(N.__all__)) and all(hasattr(N, name) for name in N.__all__)


def test_the_docstring_example_runs_and_fills_the_queue_in_order() -> None:
    assert N.__doc__ is not None
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", N.__doc__)
    assert len(blocks) == 1
    torch.manual_seed(0)
    scope: dict[str, object] = {}
    exec(compile("\n".join(line[4:] for line in blocks[0].splitlines()), "negatives docstring", "exec"), scope)
    q = scope["queue"]
    assert isinstance(q, N.KeyQueue) and len(q) == 24
    # the last batch of keys is the newest in the ring buffer (rows 16..23)
    assert isinstance(scope["k"], torch.Tensor)
    torch.testing.assert_close(q.keys()[16:24], scope["k"])


def test_gathers_are_the_identity_without_a_process_group() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    assert N.gather_with_grad(x) is x and N.gather_no_grad(x) is x
    assert N.world() == (0, 1) and N.rank_offset(5) == 0
