"""`contrastkit export RUN_DIR --format F --out PATH`: a trained run's encoder, or its
embeddings, in a format other tools load — each checked against `contrastkit embed`.

| format | runs | writes | module |
|---|---|---|---|
| ``torchvision``, ``timm`` | runs that encode images (ResNet encoders; timm/ ones: timm) | a strict-loading state dict + snippet | backbone.py |
| ``onnx`` | runs that encode images and / or texts | ONNX graph(s), checked with onnxruntime | onnx_export.py |
| ``huggingface`` (``sentence-transformers``) | runs that encode texts, without a projection | a transformers + sentence-transformers folder with a model card | hf_folder.py, model_card.py |
| ``arrays`` | runs that write embeddings | embeddings + ids (+ labels) as .npz / .parquet | arrays.py |
| ``word2vec`` | runs with vectors by word or item id (word2vec, item2vec, recsys) | the word2vec text format gensim loads | word2vec.py |
| ``sb3`` | RL runs (a DQN agent) | Stable-Baselines3's .zip, loadable with ``DQN.load`` | sb3.py |

The towers (what `embed` computes with) come from the run object (towers.py); files are written
whole or not at all (files.py). Optional packages (onnx, onnxruntime, timm,
sentence-transformers, pyarrow: ``contrastkit[export]``; gensim, to check a word2vec file;
stable-baselines3: ``contrastkit[rl]``) are imported only by the format that needs them.
"""  # noqa: E501 (a table kept whole)

from __future__ import annotations

from pathlib import Path

from contrastkit.errors import UserError, check_choice
from contrastkit.tasks import Acts, EncodesImages, EncodesTexts, HasKeyedVectors, Task, TrainedRun, all_tasks

FORMATS: tuple[str, ...] = ("torchvision", "timm", "onnx", "huggingface", "arrays", "word2vec", "sb3")
ALIASES = {"sentence-transformers": "huggingface"}
FORMAT_NAMES: tuple[str, ...] = (*FORMATS, *ALIASES)


def _writes_embeddings(run: type[TrainedRun]) -> bool:
    return run.embed is not TrainedRun.embed


def supports(run: type[TrainedRun], fmt: str) -> bool:
    """Whether runs of this kind export to ``fmt``."""
    if fmt in ("torchvision", "timm"):
        return issubclass(run, EncodesImages)
    if fmt == "onnx":
        return issubclass(run, EncodesImages) or issubclass(run, EncodesTexts)
    if fmt == "huggingface":
        return issubclass(run, EncodesTexts) and not issubclass(run, EncodesImages)
    if fmt == "word2vec":
        return issubclass(run, HasKeyedVectors)
    if fmt == "sb3":
        return issubclass(run, Acts)
    return _writes_embeddings(run)


def formats_for(task: type[Task]) -> list[str]:
    """The formats runs of ``task`` export to."""
    return [f for f in FORMATS if any(supports(r, f) for r in task.runs)]


def export_run(run_dir: Path, fmt: str, out: Path, data: str | None = None) -> list[str]:
    """Export the run in ``run_dir`` as ``fmt`` to ``out``; returns the lines to print (what was
    written, how to load it, parity with `embed`). User mistakes raise one-line UserErrors."""
    from contrastkit.runner import load_run

    check_choice("--format", fmt, FORMAT_NAMES)
    fmt = ALIASES.get(fmt, fmt)
    if fmt in ("word2vec", "sb3"):  # --out's suffix, before the run is loaded
        from contrastkit.export.sb3 import check_sb3
        from contrastkit.export.word2vec import check_word2vec

        (check_word2vec if fmt == "word2vec" else check_sb3)(out)
    run = load_run(run_dir, {"train.device": "cpu"})  # exports are written and checked on the CPU
    if not supports(type(run), fmt):
        able = [t.name for t in all_tasks() if fmt in formats_for(t)]
        own = [f for f in FORMATS if supports(type(run), f)]
        raise UserError(
            f"--format {fmt} exports runs of task {' / '.join(able)}; this run's task is {run.task!r}, "
            f"which exports to: {', '.join(own) or 'none of the formats'}"
        )
    if data is not None and fmt != "arrays":
        raise UserError(f"--data chooses the data set of --format arrays; --format {fmt} exports a model")
    if fmt == "arrays":
        from contrastkit.export.arrays import export_arrays

        return export_arrays(run, data, out)
    if fmt == "word2vec":
        from contrastkit.export.word2vec import export_word2vec

        assert isinstance(run, HasKeyedVectors)
        return export_word2vec(run.keyed_vectors(), out)
    if fmt == "sb3":
        from contrastkit.export.sb3 import export_sb3

        return export_sb3(run, out)
    from contrastkit.export.towers import image_tower, text_tower

    if fmt in ("torchvision", "timm"):
        from contrastkit.export.backbone import check_backbone, export_backbone

        assert isinstance(run, EncodesImages)
        check_backbone(run.image_input().arch, fmt)
        return export_backbone(image_tower(run), fmt, out)
    if fmt == "huggingface":
        from contrastkit.export.hf_folder import check_huggingface, export_huggingface
        from contrastkit.export.model_card import model_card

        check_huggingface(run.config.text.pooling, out)
        return export_huggingface(text_tower(run), out, card=model_card(run.config, run.results, name=out.name))
    from contrastkit.export.onnx_export import check_onnx, export_onnx

    check_onnx(out)  # before loading the models
    image = image_tower(run) if isinstance(run, EncodesImages) else None
    text = text_tower(run) if isinstance(run, EncodesTexts) else None
    return export_onnx(image, text, out)
