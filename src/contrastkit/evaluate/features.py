"""Turn uint8 image tensors into feature matrices: a frozen encoder's output, or raw pixels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from contrastkit.errors import UserError


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise UserError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise UserError(
            f"images must be a uint8 tensor of shape (N, C, H, W), got dtype {images.dtype} "
            f"and shape {tuple(images.shape)}"
        )


def extract_features(
    encoder: nn.Module,
    images: Tensor,
    transform: Callable[[Tensor], Tensor],
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    release: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """Encode uint8 NCHW images in batches; returns float32 (N, D) features on the CPU.

    Each uint8 batch is moved to ``device`` and passed through ``transform`` (e.g. scale and
    normalise) before the encoder. The encoder runs in eval mode under ``torch.inference_mode``;
    its previous train/eval mode is restored afterwards. Outputs are flattened to (N, D).
    ``release(block)`` is called on each uint8 block once it has been encoded (a memory-mapped
    store gives the block's pages back: resident memory stays at one block).
    """
    _check_images(images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = torch.device(device)
    was_training = encoder.training
    encoder.eval()
    chunks: list[Tensor] = []
    try:
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                block = images[start : start + batch_size]
                x = transform(block.to(dev, non_blocking=True))
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out = encoder(x)
                if not isinstance(out, Tensor):
                    raise UserError(
                        f"encoder must return a Tensor, got {type(out).__name__}; "
                        "wrap it so forward(x) returns the embedding"
                    )
                chunks.append(out.reshape(out.shape[0], -1).float().cpu())
                if release is not None:
                    release(block)
    finally:
        encoder.train(was_training)
    if not chunks:
        raise UserError("images is empty; need at least one image")
    return torch.cat(chunks)


def flatten_pixels(images: Tensor) -> Tensor:
    """Raw-pixel baseline features: uint8 (N, C, H, W) -> float32 (N, C*H*W) scaled to [0, 1]."""
    _check_images(images)
    return images.reshape(images.shape[0], -1).float().div_(255.0)
