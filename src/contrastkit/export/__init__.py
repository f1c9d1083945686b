"""`contrastkit export RUN_DIR --format F --out PATH`: a trained run's encoder, or its
embeddings, in a format other tools load — each checked against `contrastkit embed`.

| format | runs | writes | module |
|---|---|---|---|
| ``torchvision``, ``timm`` | image, image_text (ResNet encoders) | a strict-loading state dict + snippet | backbone.py |
| ``onnx`` | image, text, image_text | ONNX graph(s), checked with onnxruntime | onnx_export.py |
| ``huggingface`` (``sentence-transformers``) | text | a transformers + sentence-transformers folder | hf_folder.py |
| ``arrays`` | every built-in task | embeddings + ids (+ labels) as .npz / .parquet | arrays.py |

The towers (what `embed` computes with) are loaded in towers.py. Optional packages (onnx,
onnxruntime, timm, sentence-transformers, pyarrow: ``contrastkit[export]``) are imported only
by the format that needs them.
"""

from __future__ import annotations

from pathlib import Path

from contrastkit.errors import UserError, check_choice

FORMATS: dict[str, tuple[str, ...]] = {  # format → the tasks whose runs it exports
    "torchvision": ("image", "image_text"),
    "timm": ("image", "image_text"),
    "onnx": ("image", "text", "image_text"),
    "huggingface": ("text",),
    "arrays": ("image", "text", "image_text", "recsys", "sequences"),
}
ALIASES = {"sentence-transformers": "huggingface"}
FORMAT_NAMES: tuple[str, ...] = (*FORMATS, *ALIASES)


def formats_for(task: str) -> list[str]:
    """The formats a run of ``task`` exports to."""
    return [name for name, tasks in FORMATS.items() if task in tasks]


def export_run(run_dir: Path, fmt: str, out: Path, data: str | None = None) -> list[str]:
    """Export the run in ``run_dir`` as ``fmt`` to ``out``; returns the lines to print (what was
    written, how to load it, parity with `embed`). User mistakes raise one-line UserErrors."""
    from contrastkit.runs import read_run_config

    check_choice("--format", fmt, FORMAT_NAMES)
    fmt = ALIASES.get(fmt, fmt)
    cfg = read_run_config(Path(run_dir))
    if cfg.task not in FORMATS[fmt]:
        able = formats_for(cfg.task)
        raise UserError(
            f"--format {fmt} exports runs of task {' / '.join(FORMATS[fmt])}; this run's task is "
            f"{cfg.task!r}, which exports to: {', '.join(able) or 'none of the formats'}"
        )
    if data is not None and fmt != "arrays":
        raise UserError(f"--data chooses the data set of --format arrays; --format {fmt} exports a model")
    if fmt == "arrays":
        from contrastkit.export.arrays import export_arrays

        return export_arrays(Path(run_dir), cfg, data, out)
    from contrastkit.export.towers import image_tower, text_tower

    if fmt in ("torchvision", "timm"):
        from contrastkit.export.backbone import check_backbone, export_backbone

        check_backbone(cfg.model.encoder, fmt)
        return export_backbone(image_tower(run_dir, cfg), fmt, out)
    if fmt == "huggingface":
        from contrastkit.export.hf_folder import check_huggingface, export_huggingface

        check_huggingface(cfg.text.pooling, out)
        return export_huggingface(text_tower(run_dir, cfg), out)
    from contrastkit.export.onnx_export import check_onnx, export_onnx

    check_onnx(out)  # before loading the run
    image = image_tower(run_dir, cfg) if cfg.task in ("image", "image_text") else None
    text = text_tower(run_dir, cfg) if cfg.task in ("text", "image_text") else None
    return export_onnx(image, text, out)
