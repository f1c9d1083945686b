"""Where a run executes: the device, seeds and threads, mixed precision, and (under torchrun) the
process group; shared by training and by the use of a finished run (evaluation, search, export)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from contrastkit.errors import UserError
from contrastkit.training.distributed import init_from_env
from contrastkit.training.malloc import keep_freed_memory
from contrastkit.training.options import TrainConfig


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for full precision; bf16 by default on CUDA."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated GPU memory on CUDA, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def channels_last_for(model: torch.nn.Module, device: torch.device, wanted: bool) -> bool:
    """Whether ``model`` should run in channels_last memory format: ``wanted``, except on CPU when
    the model has a 1x1 convolution whose input channels are not a multiple of 8. PyTorch's
    oneDNN kernel for the weight gradient of such a convolution writes past its buffer in
    channels_last (found with valgrind, e.g. 4 -> 8 channels at stride 2), which corrupts the
    heap; those models stay contiguous on CPU."""
    if not wanted or device.type != "cpu":
        return wanted
    return not any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.in_channels % 8 != 0 for m in model.modules()
    )


def run_device(train: TrainConfig) -> torch.device:
    """The device a finished run computes on (``train.device``; one process), changing nothing
    else in the process."""
    device = resolve_device(train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device {train.device!r} asked for CUDA, but no GPU is visible")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


@contextmanager
def evaluation_runtime(train: TrainConfig, device: torch.device) -> Iterator[None]:
    """An evaluation's runtime: torch seeded with ``train.seed`` (so that it is the same whatever
    ran before it), ``train.num_threads``, TF32 matmuls on a GPU — and afterwards the caller's
    random state, threads and matmul precision as they were."""
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(train.seed)
        if train.num_threads:
            torch.set_num_threads(train.num_threads)
        if cuda:
            torch.set_float32_matmul_precision("high")
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.set_float32_matmul_precision(precision)


def setup_runtime(train: TrainConfig, *, training: bool = True) -> torch.device:
    """Seeds, threads and matmul precision; for ``training``, glibc's malloc thresholds
    (``train.keep_freed_memory``) and, under torchrun, the process group. Returns the device
    (cuda:LOCAL_RANK under torchrun on GPUs). Using a finished run passes ``training=False``: it
    runs in one process, and leaves the C library's allocator as it is."""
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    torch.manual_seed(train.seed)
    device = resolve_device(train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device {train.device!r} asked for CUDA, but no GPU is visible")
    if training:
        keep_freed_memory(train.keep_freed_memory)  # see contrastkit.training.malloc
        ctx = init_from_env(device, train.dist_timeout_minutes)
        if ctx.enabled and device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
        if ctx.enabled and not ctx.is_main:
            warnings.filterwarnings("ignore")  # rank 0 speaks for the job
    elif device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    return device
