"""`contrastkit export`: every format loads in its own library and gives what `contrastkit embed`
gives on the same inputs; user mistakes are one line and exit 2. Tiny runs, trained once."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing from a hub

from contrastkit.cli import main

from ..conftest import tiny_overrides
from ..recsys_helpers import tiny_sets, write_tiny_movielens
from ..text_helpers import quick_runs, tiny_clip_sets, tiny_text_sets, write_text_data

TOL = 1e-4  # what the export promises (float32)


def _sets(**extra: object) -> list[str]:
    return [x for pair in tiny_overrides(**extra) for x in ("--set", pair)]


def _train(run: Path, *argv: str) -> Path:
    assert main(["train", "--out", str(run), "--no-eval", "--quiet", *argv]) == 0
    return run


@pytest.fixture(scope="module", autouse=True)
def _quick_runs() -> Iterator[None]:
    with quick_runs():
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A ResNet-18 image run, the quickstart's small_resnet, a tiny text run and a recsys run."""
    root = tmp_path_factory.mktemp("export")
    one_step = {"train.max_steps": 1, "train.checkpoint_every": 100, "train.batch_size": 16}
    text = write_text_data(root / "text")
    ml = write_tiny_movielens(root / "ml")
    return {
        "resnet": _train(root / "resnet", *_sets(**{"model.encoder": "resnet18", **one_step})),
        "small": _train(root / "small", *_sets(**one_step)),
        "text": _train(root / "text_run", *tiny_text_sets(text, **{"train.max_steps": 2, "train.checkpoint_every": 2})),
        "corpus": text["corpus"],
        "recsys": _train(root / "recsys", "ml100k-lightgcn", *tiny_sets(ml, **{"train.epochs": 1})),
    }


def _export(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> list[str]:
    assert main(["export", *map(str, argv)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.splitlines()


class Embeddings:
    """What `contrastkit embed RUN --data DATA` writes, run once per run and data for the module:
    the reference every format is checked against."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[tuple[Path, str], Path] = {}

    def file(self, run: Path, data: str | Path | None, suffix: str = ".npy") -> Path:
        """The file written (for .npy, the labels, where the data has some, are in the
        .labels.npy beside it); ``data`` None: the run's default (a recsys run's users and items)."""
        key = (run, f"{data}{suffix}")
        if key not in self.files:
            out = self.root / f"{len(self.files)}{suffix}"
            argv = ["embed", str(run), "--out", str(out), *(["--data", str(data)] if data is not None else [])]
            with contextlib.redirect_stdout(io.StringIO()):
                assert main(argv) == 0
            self.files[key] = out
        return self.files[key]

    def __call__(self, run: Path, data: str | Path) -> np.ndarray:
        return np.load(self.file(run, data))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Embeddings:
    return Embeddings(tmp_path_factory.mktemp("embedded"))


@functools.cache
def _digits_test() -> torch.Tensor:
    from contrastkit.data.image import load_image_dataset

    return load_image_dataset("digits", split="test", download=False).images


def _printed_code(lines: list[str]) -> str:
    """The snippet after 'load it with:' exactly as printed."""
    return textwrap.dedent("\n".join(lines[lines.index("load it with:") + 1 :]))


@pytest.mark.parametrize("fmt", ["torchvision", "timm"])
def test_state_dict_loads_strictly_and_matches_embed(
    fmt: str, runs: dict[str, Path], embedded: Embeddings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if fmt == "timm":
        pytest.importorskip("timm", reason="timm is not installed (pip install 'contrastkit[export]')")
    want = embedded(runs["resnet"], "digits:test")
    out = tmp_path / ("w.pt" if fmt == "timm" else "w.safetensors")
    lines = _export(capsys, runs["resnet"], "--format", fmt, "--out", out)
    assert lines[0].startswith(f"wrote {out}") and "max abs diff" in lines[1]
    assert "mean [" in lines[2] and "std [" in lines[2]
    code = _printed_code(lines)
    assert "strict=True" in code and "nn.Conv2d(1, 64, kernel_size=3, stride=1" in code and "maxpool = nn.Identity()" in code
    scope: dict[str, Any] = {"images": _digits_test()}
    exec(code, scope)  # build the constructor exactly as the printed snippet says
    got = scope["features"].numpy()
    assert got.shape == want.shape == (360, 512)
    assert np.abs(got - want).max() <= 1e-5


def test_onnx_image_encoder_matches_embed(
    runs: dict[str, Path], embedded: Embeddings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    for name in ("resnet", "small"):  # the quickstart's small_resnet exports to ONNX too
        want = embedded(runs[name], "digits:test")
        out = tmp_path / f"{name}.onnx"
        lines = _export(capsys, runs[name], "--format", "onnx", "--out", out)
        assert lines[0].startswith(f"wrote {out}") and "max abs diff" in lines[1]
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {"pixels": _digits_test().numpy().astype(np.float32) / 255})[0]  # 360: dynamic batch
        assert got.shape == want.shape and np.abs(got - want).max() <= TOL


def test_a_timm_vit_exports_to_timm_and_onnx(
    embedded: Embeddings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """model.encoder=timm/vit_tiny_patch16_224 on the 8×8 digits (patch 4, two blocks): --format
    timm rebuilds it with the printed timm.create_model call and loads strictly; ONNX runs it in
    onnxruntime; both give what `contrastkit embed` gives."""
    pytest.importorskip("timm", reason="timm is not installed (pip install 'contrastkit[timm]')")
    ort = pytest.importorskip("onnxruntime")
    run = _train(tmp_path / "vit", *_sets(**{"model.encoder": "timm/vit_tiny_patch16_224", "model.timm_kwargs":
                                             "{patch_size: 4, depth: 2}", "train.max_steps": 1, "train.batch_size": 16}))
    want = embedded(run, "digits:test")
    assert "encoder timm/vit_tiny_patch16_224: 0.89M parameters, 192-d features, random init" in capsys.readouterr().out
    lines = _export(capsys, run, "--format", "timm", "--out", tmp_path / "w.safetensors")
    assert "timm vit_tiny_patch16_224 key layout" in lines[0]
    code = _printed_code(lines)
    assert ("timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0, in_chans=1, img_size=8, "
            "patch_size=4, depth=2)") in code and "strict=True" in code
    scope: dict[str, Any] = {"images": _digits_test()}
    exec(code, scope)
    assert scope["features"].shape == want.shape == (360, 192) and np.abs(scope["features"].numpy() - want).max() <= 1e-5
    _export(capsys, run, "--format", "onnx", "--out", tmp_path / "vit.onnx")
    session = ort.InferenceSession(str(tmp_path / "vit.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": _digits_test().numpy().astype(np.float32) / 255})[0]
    assert got.shape == want.shape and np.abs(got - want).max() <= TOL
    assert main(["export", str(run), "--format", "torchvision", "--out", str(tmp_path / "tv.pt")]) == 2
    assert "(only resnet18, resnet50 do; timm/<name> encoders export to timm)" in capsys.readouterr().err


def test_onnx_text_encoder_matches_embed(
    runs: dict[str, Path], embedded: Embeddings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    import transformers

    want = embedded(runs["text"], runs["corpus"])
    out = tmp_path / "text.onnx"
    lines = _export(capsys, runs["text"], "--format", "onnx", "--out", out)
    assert any(line.startswith(f"wrote {tmp_path / 'text.tokenizer'}") for line in lines)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "text.tokenizer"))
    texts = runs["corpus"].read_text().splitlines()
    enc = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="np")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]
    assert got.shape == want.shape and np.abs(got - want).max() <= TOL


def test_image_text_towers_export_with_their_projections(
    embedded: Embeddings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CLIP: the image tower's projection becomes the ResNet's fc; ONNX writes one graph per tower."""
    ort = pytest.importorskip("onnxruntime")
    import transformers

    sets = tiny_clip_sets(**{"model.encoder": "resnet18", "train.batch_size": 16, "train.max_steps": 1})
    run = _train(tmp_path / "clip", *sets)
    images = embedded(run, "digits:test")
    texts = [f"a photo of a {d}" for d in range(10)] + ["a small dark 7"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    captions = embedded(run, tmp_path / "texts.txt")

    code = _printed_code(_export(capsys, run, "--format", "torchvision", "--out", tmp_path / "w.safetensors"))
    assert "model.fc = nn.Linear(512, 16, bias=False)" in code
    scope: dict[str, Any] = {"images": _digits_test()}
    exec(code, scope)
    assert np.abs(scope["features"].numpy() - images).max() <= 1e-5

    _export(capsys, run, "--format", "onnx", "--out", tmp_path / "clip.onnx")
    session = ort.InferenceSession(str(tmp_path / "clip.image.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": _digits_test().numpy().astype(np.float32) / 255})[0]
    assert got.shape == images.shape == (360, 16) and np.abs(got - images).max() <= TOL
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "clip.tokenizer"))
    enc = tokenizer(texts, padding=True, truncation=True, max_length=12, return_tensors="np")
    session = ort.InferenceSession(str(tmp_path / "clip.text.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]
    assert got.shape == captions.shape == (11, 16) and np.abs(got - captions).max() <= TOL


def _with_pooling(run: Path, pooling: str, dest: Path) -> Path:
    """A copy of a text run pooling otherwise (pooling has no weights: the checkpoint still fits)."""
    shutil.copytree(run, dest)
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["text"]["pooling"] = pooling
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dest


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_huggingface_folder_loads_in_transformers_and_sentence_transformers(
    pooling: str, runs: dict[str, Path], embedded: Embeddings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import transformers

    run = runs["text"] if pooling == "mean" else _with_pooling(runs["text"], pooling, tmp_path / "run")
    texts = runs["corpus"].read_text().splitlines()[:300]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    want = embedded(run, tmp_path / "texts.txt")
    with contextlib.redirect_stdout(io.StringIO()):  # results.json gets the evaluation the model card shows
        assert main(["evaluate", str(run), "--set", "eval.baselines=false"]) == 0
    spearman = json.loads((run / "results.json").read_text())["eval"]["encoders"]["trained"]["sts"]["spearman"]
    out = tmp_path / "hf"
    lines = _export(capsys, run, "--format", "sentence-transformers" if pooling == "cls" else "huggingface", "--out", out)
    assert lines[0].startswith(f"wrote {out}/") and f"{pooling} Pooling, model card README.md" in lines[0]
    card = (out / "README.md").read_text()
    front, body = card.split("---\n")[1:3]  # YAML front matter, then markdown
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "sentence-transformers" and "simcse" in meta["tags"]
    assert "## Method" in body and "**simcse**" in body and "| text.pooling | " + pooling + " |" in body
    assert f"| encoders / trained / sts / spearman | {spearman:.4g} |" in body  # the results table: results.json's number

    model = transformers.AutoModel.from_pretrained(str(out)).eval()  # AutoModel + our pooling
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    enc = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    got = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    assert np.abs(got.numpy() - want).max() <= TOL

    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    encoded = st.SentenceTransformer(str(out), device="cpu").encode(texts, show_progress_bar=False)
    assert encoded.shape == want.shape and np.abs(encoded - want).max() <= TOL


def _read(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    dim = table.schema.field("embedding").type.list_size
    out = {f"{k}s": np.asarray(table[k].to_pylist()) for k in table.column_names if k != "embedding"}
    out["embeddings"] = table["embedding"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
    return out


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_arrays_are_embed_with_ids(
    suffix: str, runs: dict[str, Path], embedded: Embeddings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    # images: the rows of the data set with their labels
    want = embedded(runs["resnet"], "digits:test")
    _export(capsys, runs["resnet"], "--format", "arrays", "--data", "digits:test", "--out", tmp_path / f"img{suffix}")
    got = _read(tmp_path / f"img{suffix}")
    np.testing.assert_array_equal(got["embeddings"], want)
    np.testing.assert_array_equal(got["ids"], np.arange(360))
    labels = embedded.file(runs["resnet"], "digits:test").with_suffix(".labels.npy")
    np.testing.assert_array_equal(got["labels"], np.load(labels))
    # texts: rows and the texts
    want = embedded(runs["text"], runs["corpus"])
    _export(capsys, runs["text"], "--format", "arrays", "--data", runs["corpus"], "--out", tmp_path / f"txt{suffix}")
    got = _read(tmp_path / f"txt{suffix}")
    np.testing.assert_array_equal(got["embeddings"], want)
    assert got["texts"].tolist() == runs["corpus"].read_text().splitlines()
    # recommendation: users then items by default (their own ids), or one set with --data
    _export(capsys, runs["recsys"], "--format", "arrays", "--out", tmp_path / f"rec{suffix}")
    got = _read(tmp_path / f"rec{suffix}")
    with np.load(embedded.file(runs["recsys"], None, ".npz")) as z:
        np.testing.assert_array_equal(got["embeddings"], np.concatenate([z["user_embeddings"], z["item_embeddings"]]))
        assert got["ids"].tolist() == [*z["user_ids"].tolist(), *z["item_ids"].tolist()]
    assert got["kinds"].tolist() == ["user"] * 40 + ["item"] * 30
    _export(capsys, runs["recsys"], "--format", "arrays", "--data", "items", "--out", tmp_path / f"items{suffix}")
    assert _read(tmp_path / f"items{suffix}")["ids"].tolist() == [str(i) for i in range(1, 31)]


def test_one_line_errors(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cls_run = _with_pooling(runs["text"], "first_last_avg", tmp_path / "fla")
    for argv, message in (
        ([runs["resnet"], "--format", "keras", "--out", tmp_path / "m.h5"],
         "unknown --format 'keras'; allowed: arrays, huggingface, onnx, sb3, sentence-transformers, timm, torchvision, "
         "word2vec"),
        ([tmp_path / "nowhere", "--format", "onnx", "--out", tmp_path / "m.onnx"], "is not a contrastkit run folder (no "
            "config.yaml)"),
        ([runs["recsys"], "--format", "onnx", "--out", tmp_path / "m.onnx"], "this run's task is 'recsys', which exports "
            "to: arrays, word2vec"),
        ([runs["resnet"], "--format", "huggingface", "--out", tmp_path / "hf"],
         "--format huggingface exports runs of task text; this run's task is 'image', which exports to: torchvision, timm, "
             "onnx, arrays"),
        ([runs["small"], "--format", "torchvision", "--out", tmp_path / "w.pt"],
         "image encoder 'small_resnet' has no torchvision equivalent (only resnet18, resnet50 do); export it with --format "
             "onnx or --format arrays"),
        ([cls_run, "--format", "huggingface", "--out", tmp_path / "hf"],
         "text.pooling 'first_last_avg' has no sentence-transformers Pooling mode"),
        ([runs["resnet"], "--format", "arrays", "--data", "digits:test", "--out", tmp_path / "e.csv"], "name it *.npz or "
            "*.parquet"),
        ([runs["resnet"], "--format", "onnx", "--out", tmp_path / "m.pt"], "an ONNX export is a .onnx file"),
        ([runs["resnet"], "--format", "onnx", "--data", "digits:test", "--out", tmp_path / "m.onnx"], "--data chooses the "
            "data set of --format arrays"),
        ([runs["resnet"], "--format", "arrays", "--out", tmp_path / "e.npz"], "--data is required for this run"),
    ):
        assert main(["export", *map(str, argv)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("contrastkit: error: ") and message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(("fmt", "cifar_stem", "channels", "proj"), [
    ("torchvision", False, 1, False), ("timm", False, 3, True),
])
def test_snippets_for_other_stems_and_channels(fmt: str, cifar_stem: bool, channels: int, proj: bool, tmp_path: Path) -> None:
    """The printed snippet for the ImageNet stem, 1 or 3 channels and a projection, without a run."""
    if fmt == "timm":
        pytest.importorskip("timm")
    from contrastkit.encoders.image import TorchvisionResNet
    from contrastkit.export.backbone import export_backbone
    from contrastkit.export.towers import ImageTower

    torch.manual_seed(0)
    encoder = TorchvisionResNet(18, channels, cifar_stem=cifar_stem).eval()
    head = torch.nn.Linear(512, 8, bias=False) if proj else None
    tower = ImageTower(
        encoder=encoder, proj=head, arch="resnet18", cifar_stem=cifar_stem, channels=channels, size=16,
        mean=[0.5] * channels, std=[0.25] * channels,
        samples=torch.randint(0, 256, (3, channels, 16, 16), dtype=torch.uint8), reference=lambda x: x,
    )
    tower.reference = lambda images: tower.pixels_model()(images.float() / 255).detach()
    lines = export_backbone(tower, fmt, tmp_path / "w.safetensors")  # runs the snippet and checks it
    assert ("maxpool = nn.Identity()" in "\n".join(lines)) == cifar_stem
