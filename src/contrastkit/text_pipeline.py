"""Text (``task: text``, SimCSE) and image–text (``task: image_text``, CLIP / SigLIP) runs:
Config → data, encoders, method, loader, the generic Trainer → run folder; evaluation; embed.

Run folder, besides the generic files (config.yaml, train_log.csv, tensorboard/,
checkpoints/last.pt, results.json): ``text_encoder/`` (the text tower as a transformers folder:
config, tokenizer, weights once trained), ``text_run.json`` (what reloading needs: image
channels, size and normalisation for image–text runs), ``encoder.safetensors`` (the image
tower of image–text runs) and ``index/`` (nearest-neighbour indexes, see contrastkit.index).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.config import Config
from contrastkit.errors import UserError, check_choice
from contrastkit.train import TrainSummary

TEXT_METHODS: tuple[str, ...] = ("simcse", "simcse_supervised")
IMAGE_TEXT_METHODS: tuple[str, ...] = ("clip", "siglip")
ENCODER_DIR = "text_encoder"
META_FILE = "text_run.json"
TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".csv", ".tsv", ".tab", ".jsonl", ".json", ".ndjson")
RETRIEVAL_IMAGES = 1000  # test images scored by image↔text retrieval
TRAINED, INITIAL = "trained", "initial"


def _log(message: str, verbose: bool) -> None:
    if verbose:
        print(message, flush=True)


# ----------------------------------------------------------------------------- validation


def validate(cfg: Config) -> None:
    """Check the text / image_text parts of a config (one-line UserError on a bad value)."""
    from contrastkit.data.text.augment import AUGMENTATIONS
    from contrastkit.encoders.text import TEXT_POOLINGS

    t = cfg.text
    if cfg.task == "text":
        check_choice("method.name (task text)", cfg.method.name, TEXT_METHODS)
        if not t.train_file:
            raise UserError("task text needs text.train_file (a .txt, .csv, .tsv, .jsonl file or sick:SPLIT)")
        if cfg.method.name == "simcse_supervised" and t.train_columns and len(t.train_columns) not in (2, 3):
            raise UserError(
                f"simcse_supervised needs text.train_columns = [anchor, positive] or "
                f"[anchor, positive, negative]; got {t.train_columns}"
            )
        if cfg.method.name == "simcse_supervised" and not t.train_columns and not t.train_file.startswith("sick:"):
            raise UserError("simcse_supervised needs text.train_columns = [anchor, positive(, negative)]")
    else:
        from contrastkit.data.image import DATASETS
        from contrastkit.encoders import IMAGE_ENCODERS

        check_choice("method.name (task image_text)", cfg.method.name, IMAGE_TEXT_METHODS)
        check_choice("model.encoder", cfg.model.encoder, IMAGE_ENCODERS)
        if t.train_file:
            if len(t.train_columns) != 2:
                raise UserError(
                    f"image_text from a table needs text.train_columns = [image, caption]; got {t.train_columns}"
                )
        else:
            check_choice("data.name", cfg.data.name, DATASETS)
        from contrastkit.data.text.captions import check_templates

        check_templates(t.caption_templates, "text.caption_templates")
        check_templates(t.zero_shot_templates, "text.zero_shot_templates")
    check_choice("text.pooling", t.pooling, TEXT_POOLINGS)
    if t.max_length < 2:
        raise UserError(f"text.max_length must be >= 2, got {t.max_length}")
    for key in ("max_train_examples", "gradcache_chunk", "embed_dim", "tiny_width", "tiny_layers"):
        value = getattr(t, key)
        if value is not None and value < 1:
            raise UserError(f"text.{key} must be >= 1, got {value}")
    if t.tiny_vocab_size < 16:
        raise UserError(f"text.tiny_vocab_size must be >= 16, got {t.tiny_vocab_size}")
    if t.dropout is not None and not 0 <= t.dropout < 1:
        raise UserError(f"text.dropout must be in [0, 1), got {t.dropout}")
    if not t.max_logit_scale > 1:
        raise UserError(f"text.max_logit_scale must be > 1, got {t.max_logit_scale}")
    if not t.siglip_scale_init > 0:
        raise UserError(f"text.siglip_scale_init must be > 0, got {t.siglip_scale_init}")
    if not t.recall_k or any(k < 1 for k in t.recall_k):
        raise UserError(f"text.recall_k must list positive integers, got {t.recall_k}")
    for item in t.augment or []:
        if not isinstance(item, dict) or "name" not in item:
            raise UserError(f"each text.augment entry must be a mapping with a name, got {item!r}")
        check_choice("text augmentation", str(item["name"]), AUGMENTATIONS)
    if t.sts_file and len(t.sts_columns) != 3:
        raise UserError(f"text.sts_columns must be [sentence1, sentence2, score], got {t.sts_columns}")
    if t.retrieval_file and t.retrieval_columns and len(t.retrieval_columns) != 2:
        raise UserError(f"text.retrieval_columns must be [query, document], got {t.retrieval_columns}")


# ----------------------------------------------------------------------------- data


def training_texts(cfg: Config) -> list[list[str]]:
    """Aligned text columns: [sentences] (unsupervised) or [anchors, positives(, negatives)]."""
    from contrastkit.data.text.corpus import read_pairs, read_sentences

    t = cfg.text
    assert t.train_file is not None
    if cfg.method.name == "simcse":
        return [
            read_sentences(
                t.train_file, t.train_columns, t.train_filter, data_root=t.data_root, limit=t.max_train_examples
            )
        ]
    columns = t.train_columns or ["sentence_A", "sentence_B"]
    pairs = read_pairs(t.train_file, columns, t.train_filter, data_root=t.data_root, limit=t.max_train_examples)
    out = [pairs.anchors, pairs.positives]
    if pairs.negatives is not None:
        out.append(pairs.negatives)
    return out


def _split_columns(spec: str) -> tuple[str, list[str]]:
    """'file.csv#col1,col2' → ('file.csv', ['col1', 'col2'])."""
    path, sep, cols = spec.partition("#")
    return (path, [c for c in cols.split(",") if c]) if sep else (spec, [])


def is_text_spec(spec: str) -> bool:
    """Whether a data spec names text (a text/table file or sick:SPLIT) rather than images."""
    path, _ = _split_columns(spec)
    return path.startswith("sick:") or (Path(path).suffix.lower() in TEXT_SUFFIXES and Path(path).is_file())


def read_spec_texts(spec: str, cfg: Config) -> list[str]:
    """Texts of a data spec for embedding or indexing, in file order (duplicates kept)."""
    from contrastkit.data.text.corpus import read_sentences

    path, cols = _split_columns(spec)
    return read_sentences(path, cols, None, data_root=cfg.text.data_root, unique=False)


# ----------------------------------------------------------------------------- models


def _text_encoder_for_training(cfg: Config, run_dir: Path, corpus: list[str], resume: bool) -> Any:
    import tempfile

    from contrastkit.encoders.text import build_text_encoder, load_pretrained_text_encoder
    from contrastkit.negatives.distributed import world

    t = cfg.text
    rank, _ = world()
    folder = run_dir / ENCODER_DIR
    if rank != 0:  # under torchrun only rank 0 writes into the run folder
        folder = Path(tempfile.mkdtemp(prefix=f"contrastkit-rank{rank}-"))
    if resume and (folder / "config.json").is_file():
        return load_pretrained_text_encoder(folder, pooling=t.pooling, max_length=t.max_length, weights=False)
    encoder = build_text_encoder(
        t.encoder,
        pooling=t.pooling,
        max_length=t.max_length,
        dropout=t.dropout,
        corpus=corpus,
        tiny_width=t.tiny_width,
        tiny_layers=t.tiny_layers,
        tiny_vocab_size=t.tiny_vocab_size,
        folder=folder,
    )
    encoder.save(folder, weights=False)  # config + tokenizer now: a resumed run rebuilds from them
    return encoder


def _image_encoder(cfg: Config, channels: int, size: int) -> nn.Module:
    from contrastkit.encoders import build_image_encoder

    return build_image_encoder(
        cfg.model.encoder, channels, width=cfg.model.width, cifar_stem=cfg.model.cifar_stem, image_size=size
    )


def _build_method(cfg: Config, text_encoder: Any, image_encoder: nn.Module | None = None) -> nn.Module:
    from contrastkit.methods.clip import CLIP
    from contrastkit.methods.simcse import SimCSE

    t = cfg.text
    if cfg.task == "text":
        pad = text_encoder.tokenizer.pad_token_id
        return SimCSE(
            text_encoder,
            temperature=cfg.method.temperature,
            similarity=cfg.method.similarity,
            gradcache_chunk=t.gradcache_chunk,
            pad_token_id=int(pad) if pad is not None else 0,
        )
    assert image_encoder is not None
    return CLIP(
        image_encoder,
        text_encoder,
        embed_dim=t.embed_dim,
        loss=cfg.method.name,
        temperature=cfg.method.temperature,
        learn_temperature=t.learn_temperature,
        max_logit_scale=t.max_logit_scale,
        siglip_scale_init=t.siglip_scale_init,
        siglip_bias_init=t.siglip_bias_init,
        gradcache_chunk=t.gradcache_chunk,
    )


def _text_augmentation(cfg: Config, encoder: Any) -> Any:
    if not cfg.text.augment:
        return None
    from contrastkit.data.text.augment import EmbeddingNeighbours, build_text_augmentation

    return build_text_augmentation(
        cfg.text.augment,
        embedding_synonyms=lambda k: EmbeddingNeighbours(encoder.vocab(), encoder.word_embeddings(), k),
    )


# ----------------------------------------------------------------------------- image–text data


def _image_text_data(cfg: Config, split: str) -> dict[str, Any]:
    """Images (uint8 on CPU) with captions: a labelled data set with generated captions, or a table."""
    from contrastkit.data.text.captions import caption_rows_info, read_image_captions
    from contrastkit.data.text.corpus import filter_rows, read_table, resolve_spec

    t = cfg.text
    if t.train_file:
        spec = t.train_file if split == "train" else t.retrieval_file
        if not spec:
            return {}
        res = resolve_spec(spec, t.data_root)
        table = filter_rows(read_table(res.path, res.fmt), t.train_filter if split == "train" else t.retrieval_filter)
        images, captions = read_image_captions(
            res.path, t.train_columns[0], t.train_columns[1], table.rows, size=cfg.data.image_size or 64
        )
        stats = caption_rows_info(images)
        return {"images": images, "captions": captions, "labels": None, "classes": [], **stats}
    from contrastkit.pipeline import load_split

    data = load_split(cfg, split)
    if data.labels is None:
        raise UserError(f"data set {cfg.data.name!r} has no labels to make captions from; use text.train_file")
    return {
        "images": data.images,
        "labels": data.labels,
        "classes": list(data.classes),
        "mean": list(data.mean()),
        "std": list(data.std()),
    }


# ----------------------------------------------------------------------------- train


def train(
    cfg: Config, run_dir: Path, *, resume: bool = False, progress: bool = True, verbose: bool = True
) -> TrainSummary:
    """Train SimCSE (task text) or CLIP / SigLIP (task image_text); logs and checkpoints in run_dir."""
    from contrastkit.config import save_config
    from contrastkit.negatives.distributed import world
    from contrastkit.pipeline import CONFIG_FILE, setup_runtime, trainer_options
    from contrastkit.train import Trainer

    run_dir = Path(run_dir)
    device = setup_runtime(cfg)
    rank, world_size = world()
    verbose = verbose and rank == 0
    if cfg.train.batch_size % world_size:
        raise UserError(
            f"train.batch_size {cfg.train.batch_size} does not split evenly over {world_size} processes; "
            f"choose a multiple of {world_size}"
        )
    local_batch = cfg.train.batch_size // world_size
    shard = {"rank": rank, "world_size": world_size}
    if not resume and rank == 0:
        save_config(cfg, run_dir / CONFIG_FILE)
    loader: Any
    if cfg.task == "text":
        from contrastkit.data.text.loader import TextViewLoader

        columns = training_texts(cfg)
        corpus = [s for col in columns for s in col]
        encoder = _text_encoder_for_training(cfg, run_dir, corpus, resume)
        model = _build_method(cfg, encoder)
        loader = TextViewLoader(
            columns,
            encoder.tokenize,
            batch_size=local_batch,
            views=cfg.data.views,
            augmentation=_text_augmentation(cfg, encoder),
            seed=cfg.train.seed,
            device=device,
            **shard,
        )
        what = f"{len(columns[0])} {'sentences' if len(columns) == 1 else 'pairs'}"
        meta: dict[str, Any] = {"task": "text"}
    else:
        from contrastkit.data.image import build_augmentation
        from contrastkit.data.text.captions import CaptionMaker
        from contrastkit.data.text.loader import ImageTextLoader

        data = _image_text_data(cfg, "train")
        images: Tensor = data["images"]
        channels, size = int(images.shape[1]), int(cfg.data.image_size or images.shape[2])
        if data["labels"] is not None:
            maker = CaptionMaker.for_images(images, data["labels"], data["classes"], cfg.text.caption_templates)
            corpus = maker.random(list(range(len(maker.labels))), np.random.default_rng(0))
            captions = maker.random
            thresholds = maker.thresholds
            for names in maker.names:
                corpus += list(names)
        else:
            fixed = list(data["captions"])
            corpus = fixed
            thresholds = {}

            def captions(rows: list[int], rng: np.random.Generator) -> list[str]:
                return [fixed[i] for i in rows]

        text_encoder = _text_encoder_for_training(cfg, run_dir, corpus, resume)
        model = _build_method(cfg, text_encoder, _image_encoder(cfg, channels, size))
        spec: list[dict[str, Any]] = cfg.data.augment if cfg.data.augment is not None else [
            {"op": "random_resized_crop", "scale": [0.7, 1.0]},
            {"op": "horizontal_flip", "p": 0.5},
        ]
        augmentation = build_augmentation(spec, size=size, channels=channels, mean=data["mean"], std=data["std"])
        loader = ImageTextLoader(
            images,
            captions,
            text_encoder.tokenize,
            batch_size=local_batch,
            augmentation=augmentation.to(device),
            seed=cfg.train.seed,
            device=device,
            channels_last=cfg.train.channels_last,
            **shard,
        )
        if cfg.train.channels_last:
            cast(Any, model).encoder.to(memory_format=torch.channels_last)
        what = f"{images.shape[0]} image–caption pairs"
        meta = {
            "task": "image_text",
            "channels": channels,
            "size": size,
            "mean": data["mean"],
            "std": data["std"],
            "classes": data["classes"],
            "thresholds": thresholds,
        }
    if not resume and rank == 0:
        (run_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    trainer = Trainer(model, loader, run_dir, trainer_options(cfg, progress), device=device)
    if resume:
        trainer.load_checkpoint()
        _log(f"resumed {run_dir} at step {trainer.step}/{trainer.total_steps}", verbose)
    _log(
        f"training {cfg.method.name} on {what} with text encoder {cfg.text.encoder} on {device}: "
        f"{trainer.total_steps} steps of batch {cfg.train.batch_size}",
        verbose,
    )
    summary = trainer.fit()
    if rank != 0:
        return summary
    method = cast(Any, model)
    text_tower = method.encoder if cfg.task == "text" else method.text_encoder
    text_tower.save(run_dir / ENCODER_DIR)
    if cfg.task == "image_text":
        from contrastkit.train import save_safetensors

        save_safetensors(method.encoder.state_dict(), run_dir / "encoder.safetensors")
    return summary


# ----------------------------------------------------------------------------- reload


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a finished text run (no {META_FILE}); train it first")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


def load_run_model(run_dir: Path, cfg: Config, device: torch.device) -> nn.Module:
    """Rebuild a text / image–text run's model and load its last checkpoint."""
    from contrastkit.encoders.text import load_pretrained_text_encoder
    from contrastkit.train import load_checkpoint

    run_dir = Path(run_dir)
    folder = run_dir / ENCODER_DIR
    if not (folder / "config.json").is_file():
        raise UserError(f"{str(run_dir)!r} has no {ENCODER_DIR}/ folder; was it trained?")
    text_encoder = load_pretrained_text_encoder(
        folder, pooling=cfg.text.pooling, max_length=cfg.text.max_length, weights=False
    )
    image_encoder = None
    if cfg.task == "image_text":
        meta = read_meta(run_dir)
        image_encoder = _image_encoder(cfg, int(meta["channels"]), int(meta["size"]))
    model = _build_method(cfg, text_encoder, image_encoder)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location="cpu")
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _initial_model(cfg: Config, run_dir: Path, device: torch.device) -> nn.Module:
    """The model before training: the pretrained text encoder (or a random one), random image tower."""
    from contrastkit.encoders.text import build_text_encoder, load_pretrained_text_encoder

    torch.manual_seed(cfg.train.seed + 4242)
    t = cfg.text
    if t.encoder == "tiny":
        text_encoder = load_pretrained_text_encoder(
            run_dir / ENCODER_DIR, pooling=t.pooling, max_length=t.max_length, weights=False
        )
    else:
        text_encoder = build_text_encoder(t.encoder, pooling=t.pooling, max_length=t.max_length)
    image_encoder = None
    if cfg.task == "image_text":
        meta = read_meta(run_dir)
        image_encoder = _image_encoder(cfg, int(meta["channels"]), int(meta["size"]))
    return _build_method(cfg, text_encoder, image_encoder).to(device).eval()


# ----------------------------------------------------------------------------- embeddings


def _image_transform(meta: dict[str, Any]) -> Any:
    from contrastkit.data.image import eval_transform

    return eval_transform(size=int(meta["size"]), mean=meta["mean"], std=meta["std"])


@torch.no_grad()
def encode_texts(model: nn.Module, cfg: Config, texts: list[str], *, batch_size: int = 256) -> Tensor:
    """Text embeddings (N, D) on the CPU: the sentence encoder's (text) or the projected text
    tower's (image_text)."""
    m = cast(Any, model)
    device = next(model.parameters()).device
    if cfg.task == "text":
        out: Tensor = m.encoder.encode(texts, batch_size=batch_size, device=device)
        return out
    chunks = []
    tok = m.text_encoder
    for start in range(0, len(texts), batch_size):
        enc = tok.tokenize(texts[start : start + batch_size])
        chunks.append(m.embed_texts(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def encode_images(model: nn.Module, meta: dict[str, Any], images: Tensor, *, batch_size: int = 512) -> Tensor:
    """Projected image-tower embeddings (N, D) on the CPU for uint8 (N, C, H, W) images."""
    m = cast(Any, model)
    device = next(model.parameters()).device
    transform = _image_transform(meta).to(device)
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        x = transform(images[start : start + batch_size].to(device))
        chunks.append(m.embed_images(x).float().cpu())
    return torch.cat(chunks)


def _load_images_for_spec(cfg: Config, spec: str, meta: dict[str, Any]) -> tuple[Tensor, Tensor | None, list[str]]:
    from contrastkit.data.image import load_image_dataset

    name, _, split = spec.partition(":")
    root: str | None = None
    if Path(spec).is_dir():
        name, split, root = "folder", "train", spec
    elif name == cfg.data.name:
        root = cfg.data.root
    data = load_image_dataset(name, split=split or "test", root=root, download=False, image_size=int(meta["size"]))
    if data.channels != int(meta["channels"]):
        raise UserError(f"data {spec!r} has {data.channels} channel(s) but the run was trained on {meta['channels']}")
    return data.images, data.labels, list(data.classes)


def embed_items(
    run_dir: Path, cfg: Config, spec: str, *, batch_size: int = 256, unique: bool = False
) -> tuple[np.ndarray, list[dict[str, Any]], str]:
    """Embeddings of a data spec with a text / image–text run, one description per row, and the
    modality ('text' or 'image'); ``unique`` drops repeated texts (for an index)."""
    from contrastkit.pipeline import setup_runtime

    device = setup_runtime(cfg)
    model = load_run_model(run_dir, cfg, device)
    if cfg.task == "text" or is_text_spec(spec):
        texts = read_spec_texts(spec, cfg)
        if unique:
            texts = list(dict.fromkeys(texts))
        z = encode_texts(model, cfg, texts, batch_size=batch_size)
        return z.numpy(), [{"text": s} for s in texts], "text"
    meta = read_meta(run_dir)
    images, labels, classes = _load_images_for_spec(cfg, spec, meta)
    z = encode_images(model, meta, images, batch_size=batch_size)
    items: list[dict[str, Any]] = []
    for i in range(images.shape[0]):
        item: dict[str, Any] = {"image": f"{spec}#{i}"}
        if labels is not None and classes:
            item["label"] = classes[int(labels[i])]
        items.append(item)
    return z.numpy(), items, "image"


def embed(run_dir: Path, spec: str, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
    """Write embeddings of SPEC (texts, or images for image–text runs) to OUT (.npy); texts go
    to <stem>.texts.txt, image labels to <stem>.labels.npy."""
    from contrastkit.pipeline import read_run_config

    cfg = read_run_config(Path(run_dir))
    vectors, items, modality = embed_items(Path(run_dir), cfg, spec, batch_size=min(batch_size, 256))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.astype(np.float32))
    if modality == "text":
        out.with_name(out.stem + ".texts.txt").write_text("\n".join(i["text"].replace("\n", " ") for i in items) + "\n")
    return int(vectors.shape[0]), int(vectors.shape[1])


# ----------------------------------------------------------------------------- evaluate


def _evaluate_text(model: nn.Module, cfg: Config, batch_size: int) -> dict[str, Any]:
    from contrastkit.data.text.corpus import read_pairs, read_sts
    from contrastkit.evaluate.retrieval import retrieval_metrics
    from contrastkit.evaluate.sts import evaluate_sts

    t = cfg.text
    out: dict[str, Any] = {}

    def enc(texts: list[str]) -> Tensor:
        return encode_texts(model, cfg, texts, batch_size=batch_size)

    if t.sts_file:
        sts = read_sts(t.sts_file, t.sts_columns, t.sts_filter, data_root=t.data_root)
        out["sts"] = evaluate_sts(enc, sts.sentences1, sts.sentences2, sts.scores)
    if t.retrieval_file:
        cols = t.retrieval_columns or ["sentence_A", "sentence_B"]
        pairs = read_pairs(t.retrieval_file, cols, t.retrieval_filter, data_root=t.data_root)
        docs = list(dict.fromkeys(pairs.positives))
        where = {d: i for i, d in enumerate(docs)}
        relevant: dict[str, set[int]] = {}
        for q, d in zip(pairs.anchors, pairs.positives, strict=True):
            relevant.setdefault(q, set()).add(where[d])
        queries = list(relevant)
        out["retrieval"] = retrieval_metrics(
            enc(queries), enc(docs), [sorted(relevant[q]) for q in queries], ks=t.recall_k
        )
        out["retrieval"]["corpus"] = len(docs)
    return out


def _evaluate_image_text(model: nn.Module, cfg: Config, meta: dict[str, Any], batch_size: int) -> dict[str, Any]:
    from contrastkit.data.text.captions import CaptionMaker, prompts
    from contrastkit.evaluate.retrieval import retrieval_metrics

    t = cfg.text
    out: dict[str, Any] = {}
    data = _image_text_data(cfg, "test")
    if not data:
        return out
    images: Tensor = data["images"]
    zi = torch.nn.functional.normalize(encode_images(model, meta, images, batch_size=batch_size), dim=1)
    if data["labels"] is not None:
        labels: Tensor = data["labels"]
        classes = data["classes"]
        texts = prompts(classes, t.zero_shot_templates)
        flat = [p for group in texts for p in group]
        zt = torch.nn.functional.normalize(encode_texts(model, cfg, flat, batch_size=batch_size), dim=1)
        class_emb = torch.nn.functional.normalize(zt.view(len(classes), len(texts[0]), -1).mean(1), dim=1)
        pred = (zi @ class_emb.T).argmax(1)
        out["zero_shot"] = {
            "accuracy": float((pred == labels).float().mean()),
            "num_samples": int(labels.shape[0]),
            "num_classes": len(classes),
            "prompts": texts[0],
        }
        gen = torch.Generator().manual_seed(cfg.train.seed)
        rows = torch.randperm(images.shape[0], generator=gen)[: min(RETRIEVAL_IMAGES, images.shape[0])].tolist()
        maker = CaptionMaker.for_images(images, labels, classes, t.caption_templates, meta.get("thresholds") or None)
        template = t.caption_templates[-1]
        captions = maker.fixed(rows, template)
        query_images = zi[torch.tensor(rows)]
    else:
        captions = list(data["captions"])
        rows = list(range(len(captions)))
        query_images = zi
    unique = list(dict.fromkeys(captions))
    cid = {c: i for i, c in enumerate(unique)}
    caption_of = torch.tensor([cid[c] for c in captions])
    zc = encode_texts(model, cfg, unique, batch_size=batch_size)
    out["image_to_text"] = retrieval_metrics(query_images, zc, caption_of, ks=t.recall_k)
    out["image_to_text"]["corpus"] = len(unique)
    images_of = [torch.nonzero(caption_of == j).flatten().tolist() for j in range(len(unique))]
    out["text_to_image"] = retrieval_metrics(zc, query_images, images_of, ks=t.recall_k)
    out["text_to_image"]["corpus"] = len(rows)
    return out


def evaluate(run_dir: Path, cfg: Config | None = None, *, verbose: bool = True) -> dict[str, Any]:
    """STS / retrieval (text) or zero-shot and image↔text retrieval (image_text) of the trained
    model and, with eval.baselines, of the model before training."""
    from contrastkit.pipeline import read_run_config, setup_runtime

    run_dir = Path(run_dir)
    cfg = cfg or read_run_config(run_dir)
    device = setup_runtime(cfg)
    t0 = time.perf_counter()
    batch = min(cfg.eval.batch_size, 256)
    meta = read_meta(run_dir)
    results: dict[str, Any] = {"encoders": {}}
    candidates = [(TRAINED, lambda: load_run_model(run_dir, cfg, device))]
    if cfg.eval.baselines:
        candidates.append((INITIAL, lambda: _initial_model(cfg, run_dir, device)))
    for name, make in candidates:
        t1 = time.perf_counter()
        model = make()
        if cfg.task == "text":
            res = _evaluate_text(model, cfg, batch)
        else:
            res = _evaluate_image_text(model, cfg, meta, batch)
        res["seconds"] = time.perf_counter() - t1
        results["encoders"][name] = res
        _log(f"  evaluated {name} in {res['seconds']:.1f}s", verbose)
    results["seconds"] = time.perf_counter() - t0
    return results


def run_all(
    cfg: Config, run_dir: Path, *, resume: bool = False, progress: bool = True, verbose: bool = True
) -> dict[str, Any]:
    """Train then evaluate; results.json holds both."""
    from contrastkit.pipeline import train_and_evaluate

    return train_and_evaluate(
        cfg, run_dir, train, evaluate, resume=resume, progress=progress, verbose=verbose, announce=True
    )


# ----------------------------------------------------------------------------- report


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def results_table(results: dict[str, Any]) -> str:
    """A fixed-width table (values ×100), one row per encoder (trained / initial)."""
    from contrastkit.evaluate.suite import _fmt

    enc = results.get("encoders", {})
    if not enc:
        return "(nothing evaluated)"
    headers = ["encoder"]
    cols: list[tuple[str, str, str]] = []
    first = next(iter(enc.values()))
    if "sts" in first:
        cols += [("STS spearman", "sts", "spearman"), ("STS pearson", "sts", "pearson")]
    if "zero_shot" in first:
        cols.append(("zero-shot acc", "zero_shot", "accuracy"))
    for section, label in (("retrieval", ""), ("image_to_text", "i→t "), ("text_to_image", "t→i ")):
        if section in first:
            ks = sorted(int(k.split("@")[1]) for k in first[section] if k.startswith("hit@"))
            cols += [(f"{label}R@{k}", section, f"hit@{k}") for k in ks]
            if ks:
                cols += [(f"{label}MRR@{ks[-1]}", section, f"mrr@{ks[-1]}"), (f"{label}nDCG@{ks[-1]}", section, f"ndcg@{ks[-1]}")]
    headers += [c[0] for c in cols]
    rows = [[name] + [_pct(r.get(sec, {}).get(key)) for _, sec, key in cols] for name, r in enc.items()]
    return _fmt(headers, rows)


def print_summary(results: dict[str, Any], run_dir: Path) -> None:
    """What `contrastkit train` prints at the end of a text / image–text run."""
    tr = results.get("train", {})
    unit = "texts" if results.get("config", {}).get("task") == "text" else "pairs"
    print()
    print(
        f"trained {tr.get('steps')} steps ({tr.get('epochs_done', 0):.1f} epochs) in "
        f"{tr.get('seconds', 0):.0f}s, {tr.get('images_per_sec', 0):.0f} {unit}/s, final loss "
        f"{tr.get('final_loss', float('nan')):.4f}"
    )
    if "eval" in results:
        print()
        print("evaluation (×100; R@K = share of queries with a relevant item in the top K):")
        print(results_table(results["eval"]))
    print()
    print(f"results: {Path(run_dir) / 'results.json'}")
