"""`--format onnx`: the image encoder and / or the text encoder as ONNX graphs with a dynamic
batch axis (and a dynamic sequence axis for text), checked with onnxruntime against `embed`.

Image graph: ``pixels`` float32 (batch, C, S, S) in [0, 1] (uint8 / 255) → ``features``; the
run's mean / std normalisation is inside the graph. Text graph: ``input_ids``, ``attention_mask``
int64 (batch, seq) from the run's tokenizer (saved next to the graph) → ``features``, pooled
as the run pools (and projected, for image_text runs). An image_text run writes both graphs.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.export.towers import SAMPLE_TEXTS, ImageTower, TextTower, check_parity

OPSET = 17  # onnxruntime >= 1.14 runs it


def check_onnx(out: Path) -> None:
    """The one-line errors an ONNX export can give before the run is loaded."""
    if out.suffix != ".onnx":
        raise UserError(f"--out {str(out)!r}: an ONNX export is a .onnx file; name it *.onnx")
    require_onnx()


def require_onnx() -> tuple[Any, Any]:
    """onnx and onnxruntime, or a one-line error telling how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise UserError("--format onnx needs the optional packages onnx and onnxruntime: "
                        "pip install 'contrastkit[export]'") from None
    return onnx, onnxruntime


def export_onnx(image: ImageTower | None, text: TextTower | None, out: Path) -> list[str]:
    """Write the graphs (``out``, or ``<stem>.image.onnx`` and ``<stem>.text.onnx`` for two towers)."""
    check_onnx(out)
    both = image is not None and text is not None
    lines: list[str] = []
    if image is not None:
        lines += _image(image, out.with_suffix(".image.onnx") if both else out)
    if text is not None:
        lines += _text(text, out.with_suffix(".text.onnx") if both else out, out.with_suffix(".tokenizer"))
    return lines


def _image(tower: ImageTower, path: Path) -> list[str]:
    c, s = tower.channels, tower.size
    pixels = tower.samples.float() / 255
    _export(tower.pixels_model(), (pixels[:2],), path, {"pixels": {0: "batch"}})
    got = _run(path, {"pixels": pixels.numpy()})  # another batch size than the traced one
    diff = check_parity("onnx image encoder", got, tower.reference(tower.samples))
    return [
        f"wrote {path} (ONNX opset {_opset(path)}): pixels float32 (batch, {c}, {s}, {s}) in [0, 1] "
        f"→ features (batch, {tower.out_dim}); mean / std normalisation inside the graph",
        f"parity with contrastkit embed on {pixels.shape[0]} images (onnxruntime, float32): max abs diff {diff:.2e}",
        "load it with:",
        "    import onnxruntime",
        f"    session = onnxruntime.InferenceSession({str(path)!r})",
        f"    features = session.run(None, {{'pixels': images.astype('float32') / 255}})[0]  # uint8 (N, {c}, {s}, {s})",
    ]


def _text(tower: TextTower, path: Path, tokenizer_dir: Path) -> list[str]:
    trace = tower.encoder.tokenize(SAMPLE_TEXTS)  # two lengths: the traced batch is padded
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    _export(tower.ids_model(), (trace["input_ids"], trace["attention_mask"]), path, axes)
    tower.encoder.tokenizer.save_pretrained(str(tokenizer_dir))
    batch = tower.encoder.tokenize(tower.samples)
    got = _run(path, {k: v.numpy() for k, v in batch.items()})
    diff = check_parity("onnx text encoder", got, tower.reference(tower.samples))
    return [
        f"wrote {path} (ONNX opset {_opset(path)}): input_ids, attention_mask int64 (batch, seq) "
        f"→ features (batch, {tower.out_dim}), {tower.pooling} pooling inside the graph",
        f"wrote {tokenizer_dir}/ (the tokenizer; max_length {tower.max_length}, truncation on)",
        f"parity with contrastkit embed on {len(tower.samples)} texts (onnxruntime, float32): max abs diff {diff:.2e}",
        "load it with:",
        "    import onnxruntime, transformers",
        f"    tokenizer = transformers.AutoTokenizer.from_pretrained({str(tokenizer_dir)!r})",
        f"    session = onnxruntime.InferenceSession({str(path)!r})",
        f"    enc = tokenizer(texts, padding=True, truncation=True, max_length={tower.max_length}, return_tensors='np')",
        "    features = session.run(None, {'input_ids': enc['input_ids'], 'attention_mask': enc['attention_mask']})[0]",
    ]


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, axes: dict[str, dict[int, str]]) -> None:
    """Export with the TorchScript tracer (``dynamo=False``), falling back to torch.export.

    Why the tracer first: on torch 2.14 it exports these feed-forward encoders (CNNs, BERT) in
    well under a second and quietly, while the torch.export-based exporter takes 3-4 s per model
    and prints progress; both gave the same graphs (≤ 1e-6 from PyTorch) in our checks. The
    tracer is deprecated, so where it fails (or is gone) the torch.export path runs instead.
    Tracing follows the example inputs, which is safe here: the encoders have no data-dependent
    branches, and the text example is a padded batch, so the attention mask stays in the graph.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(axes)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation and tracer warnings: the parity check decides
        try:
            torch.onnx.export(
                module, args, str(path), input_names=names, output_names=["features"],
                dynamic_axes={**axes, "features": {0: "batch"}}, opset_version=OPSET, dynamo=False,
            )
        except Exception as exc:  # any tracer failure: try the other exporter
            first = exc
            dims = {label: torch.export.Dim(label) for spec in axes.values() for label in spec.values()}
            shapes = {name: {i: dims[label] for i, label in spec.items()} for name, spec in axes.items()}
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    torch.onnx.export(
                        module, args, str(path), input_names=names, output_names=["features"],
                        dynamic_shapes=shapes, dynamo=True, external_data=False,  # one file, as the tracer's
                    )
            except Exception as again:
                raise UserError(f"ONNX export failed: {_first_line(first)}; "
                                f"then with dynamo=True: {_first_line(again)}") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    onnx, ort = require_onnx()
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, feeds)[0]
    return out


def _opset(path: Path) -> int:
    onnx, _ = require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    return max((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), default=OPSET)
