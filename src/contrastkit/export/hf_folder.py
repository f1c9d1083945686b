"""`--format huggingface` (alias `sentence-transformers`): a text run's encoder as one folder
that ``transformers.AutoModel.from_pretrained(path)`` and
``sentence_transformers.SentenceTransformer(path)`` both load from local files.

Layout (the sentence-transformers v2/v3 layout, which later versions still read):

    config.json, model.safetensors, tokenizer files   transformers: AutoModel / AutoTokenizer
    contrastkit_text.json                             our pooling and max_length (text.encoder=PATH reloads it)
    modules.json, sentence_bert_config.json           module 0: Transformer, max_seq_length = text.max_length
    1_Pooling/config.json                             mean or CLS pooling, as the run pools
    README.md                                         the model card (model_card.py): data, method, settings, results

No Normalize module: `contrastkit embed` does not normalise text embeddings. ``first_last_avg``
pooling has no sentence-transformers Pooling mode, so such runs export with onnx or arrays.
The weights are the run's last checkpoint, the ones `embed` uses; BERT's pooler head (unused by
every pooling here) is not saved, so AutoModel reports ``pooler.*`` as newly initialised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contrastkit.errors import UserError
from contrastkit.export.files import write_text_atomic
from contrastkit.export.towers import TextTower, check_parity

ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}
_ALL_MODES = (
    "pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken",
)


def check_huggingface(pooling: str, out: Path) -> None:
    """The one-line errors before the run is loaded: a pooling without a twin, a used folder."""
    if pooling not in ST_POOLING:
        raise UserError(
            f"text.pooling {pooling!r} has no sentence-transformers Pooling mode (only "
            f"{', '.join(ST_POOLING)} do); export this run with --format onnx or --format arrays"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {str(out)!r} exists and is not an empty folder; choose a new folder")


def export_huggingface(tower: TextTower, out: Path, card: str | None = None) -> list[str]:
    """Write the folder ``out`` (with ``card`` as its README.md); check AutoModel (+ our pooling)
    and SentenceTransformer against `embed`."""
    if tower.proj is not None:  # the dispatcher sends text runs only
        raise UserError("--format huggingface exports the encoder of a text run; use onnx or arrays here")
    check_huggingface(tower.pooling, out)
    tower.encoder.save(out)  # config, weights (safetensors), tokenizer, contrastkit_text.json
    _write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ])
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": tower.max_length, "do_lower_case": False})
    modes = {mode: mode == ST_POOLING[tower.pooling] for mode in _ALL_MODES}
    _write_json(out / "1_Pooling" / "config.json", {"word_embedding_dimension": tower.out_dim, **modes, "include_prompt": True})
    if card is not None:
        write_text_atomic(out / "README.md", card)

    want = tower.reference(tower.samples)
    lines = [f"wrote {out}/ (transformers model + tokenizer, sentence-transformers modules: Transformer, "
             f"{tower.pooling} Pooling{', model card README.md' if card is not None else ''})"]
    lines.append(f"parity with contrastkit embed on {len(tower.samples)} texts: AutoModel + {tower.pooling} pooling "
                 f"max abs diff {check_parity('AutoModel + pooling', _automodel_features(out, tower), want):.2e}")
    st = _sentence_transformer_features(out, tower.samples)
    if st is None:
        lines.append("sentence-transformers is not installed: SentenceTransformer loading not checked")
    else:
        lines.append(f"parity with contrastkit embed: SentenceTransformer.encode max abs diff "
                     f"{check_parity('SentenceTransformer', st, want):.2e}")
    return [*lines, "load it with:",
            "    from sentence_transformers import SentenceTransformer",
            f"    features = SentenceTransformer({str(out)!r}).encode(texts)",
            "  or with transformers alone (AutoModel, then the same pooling):",
            "    import transformers",
            f"    model = transformers.AutoModel.from_pretrained({str(out)!r})  # pooler.* 'newly initialised': unused",
            f"    tokenizer = transformers.AutoTokenizer.from_pretrained({str(out)!r})",
            f"    enc = tokenizer(texts, padding=True, truncation=True, max_length={tower.max_length}, return_tensors='pt')",
            f"    hidden = model(**enc).last_hidden_state  # then {_pooling_hint(tower.pooling)}"]


def _pooling_hint(pooling: str) -> str:
    if pooling == "cls":
        return "features = hidden[:, 0]"
    return "mask = enc['attention_mask'].unsqueeze(-1); features = (hidden * mask).sum(1) / mask.sum(1)"


def _write_json(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2) + "\n")


def _automodel_features(out: Path, tower: TextTower) -> Any:
    """The folder through AutoModel (local files only) with our pooling of the run."""
    from contrastkit.encoders.text import load_pretrained_text_encoder

    reloaded = load_pretrained_text_encoder(out, pooling=tower.pooling, max_length=tower.max_length)
    return reloaded.encode(tower.samples)


def _sentence_transformer_features(out: Path, texts: list[str]) -> Any:
    """SentenceTransformer(out).encode(texts), or None without sentence-transformers."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    from contrastkit.encoders.text import quiet_transformers

    with quiet_transformers():
        model = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    return model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
