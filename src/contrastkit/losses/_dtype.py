"""Working precision of the losses: half / bfloat16 inputs are computed in float32."""

from __future__ import annotations

import torch
from torch import Tensor


def upcast(t: Tensor) -> Tensor:
    """``t`` in float32 if it is a 16-bit float, else unchanged (float32 / float64 stay)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
