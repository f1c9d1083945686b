"""Scored pairs (CoSENT, AnglE) and Matryoshka training on a tiny random BERT: the methods' steps
are the losses on the encoder's embeddings, and runs on generated scored pairs learn STS and
report their figures at each nested size."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing from a hub
pytest.importorskip("transformers")

from contrastkit.cli import main
from contrastkit.encoders.text import TextEncoder, tiny_text_encoder
from contrastkit.errors import UserError
from contrastkit.losses import angle_loss, cosent_loss, info_nce
from contrastkit.methods import AnglE, CoSENT, SimCSE

from ..text_helpers import as_sets, make_corpus, make_sts, quick_runs, write_text_data

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def _quick_runs() -> Iterator[None]:
    with quick_runs():
        yield


def _encoder(folder: Path) -> TextEncoder:
    torch.manual_seed(0)
    return tiny_text_encoder(make_corpus(300), width=32, layers=1, max_length=16, pooling="mean", dropout=0.0, folder=folder)


def _batch(enc: TextEncoder, n: int = 12) -> tuple[dict[str, object], torch.Tensor, torch.Tensor]:
    rows = make_sts(n, seed=3)
    t1, t2 = enc.tokenize([r[0] for r in rows]), enc.tokenize([r[1] for r in rows])
    scores = torch.tensor([r[2] for r in rows])
    batch = {"views": [t1["input_ids"], t2["input_ids"]], "masks": [t1["attention_mask"], t2["attention_mask"]], "scores": scores}
    with torch.no_grad():
        x, y = enc(t1["input_ids"], t1["attention_mask"]), enc(t2["input_ids"], t2["attention_mask"])
    return batch, torch.stack([x, y]), scores


def test_steps_are_the_losses_on_the_embeddings_at_each_size(tmp_path: Path) -> None:
    enc = _encoder(tmp_path)
    batch, (x, y), s = _batch(enc)
    with torch.no_grad():
        out = CoSENT(enc, scale=20.0).training_step(batch)
        assert float(out.loss) == pytest.approx(float(cosent_loss(x, y, s)), rel=1e-5)
        angle = AnglE(enc, positive_score=2.0, matryoshka_dims=[32, 8], matryoshka_weights=[1.0, 0.5]).training_step(batch)
        expected = angle_loss(x, y, s, positive=s >= 2) + 0.5 * angle_loss(x[:, :8], y[:, :8], s, positive=s >= 2)
        assert float(angle.loss) == pytest.approx(float(expected), rel=1e-5)
        assert set(angle.logs) >= {"loss", "loss_dim32", "loss_dim8"}
        simcse = SimCSE(enc, temperature=0.05, matryoshka_dims=[16, 4]).training_step(batch)
        nce = info_nce(x[:, :16], y[:, :16], temperature=0.05) + info_nce(x[:, :4], y[:, :4], temperature=0.05)
        assert float(simcse.loss) == pytest.approx(float(nce), rel=1e-5)
    with pytest.raises(UserError, match="exceed the CoSENT encoder's embedding width 32"):
        CoSENT(enc, matryoshka_dims=[64, 32])
    with pytest.raises(UserError, match="must be even for AnglE"):
        AnglE(enc, matryoshka_dims=[32, 7])
    with pytest.raises(UserError, match=r"2 views and their scores; got 2 view\(s\) and no scores"):
        CoSENT(enc).training_step({"views": batch["views"], "masks": batch["masks"]})


def _scored_file(folder: Path) -> Path:
    rows = make_sts(600, seed=2)
    path = folder / "train.tsv"
    path.write_text("a\tb\tscore\n" + "\n".join(f"{a}\t{b}\t{s}" for a, b, s in rows) + "\n")
    return path


def _run(root: Path, name: str, **sets: object) -> tuple[dict[str, object], str]:
    """`contrastkit train`: CoSENT with a one-layer tiny BERT on 600 generated scored pairs,
    evaluated on the generated STS pairs; results.json and what it printed."""
    paths = write_text_data(root / "data", n=300)
    argv = as_sets({
        "task": "text", "method.name": "cosent", "text.train_file": str(_scored_file(root / "data")),
        "text.train_columns": "[a, b, score]", "text.sts_file": str(paths["sts"]), "text.sts_columns": "[s1, s2, score]",
        "text.encoder": "tiny", "text.tiny_width": 32, "text.tiny_layers": 1, "text.max_length": 16,
        "optim.lr": 0.003, "optim.weight_decay": 0.0, "train.batch_size": 32, "train.max_steps": 12,
        "train.checkpoint_every": 12, "train.log_every": 6, "train.progress": False, "train.seed": 0, **sets,
    })
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", *argv, "--out", str(root / name)]) == 0, out.getvalue()[-2000:]
    return json.loads((root / name / "results.json").read_text()), out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, object], str]]:
    """CoSENT on generated scored pairs: plain (evaluated cut to 8 dims as well) and Matryoshka."""
    root = tmp_path_factory.mktemp("scored")
    return {
        "plain": _run(root, "plain", **{"text.eval_dims": "[8]"}),
        "matryoshka": _run(root, "matryoshka", **{"method.matryoshka_dims": "[32, 8]", "eval.baselines": False}),
    }


def test_cosent_learns_sts_from_scores(runs: dict[str, tuple[dict[str, object], str]]) -> None:
    res, printed = runs["plain"]
    enc = res["eval"]["encoders"]  # type: ignore[index]
    trained, initial = enc["trained"]["sts"]["spearman"], enc["initial"]["sts"]["spearman"]
    assert trained > initial + 0.05, (trained, initial)
    assert "training cosent on 600 scored pairs" in printed
    assert res["config"]["text"]["train_columns"] == ["a", "b", "score"]  # type: ignore[index]


def test_evaluation_at_each_size_and_matryoshka_keeps_the_small_one(runs: dict[str, tuple[dict[str, object], str]]) -> None:
    plain, printed = runs["plain"]
    nested, nested_printed = runs["matryoshka"]
    p = plain["eval"]["encoders"]["trained"]  # type: ignore[index]
    m = nested["eval"]["encoders"]["trained"]  # type: ignore[index]
    assert list(p["dims"]) == ["8"] and list(m["dims"]) == ["32", "8"]  # the method's dims by default
    assert m["dims"]["32"]["sts"] == pytest.approx(m["sts"])  # 32 = the full width
    assert "trained @8" in printed and "initial @8" in printed and "trained @32" in nested_printed
    # trained on its first 8 coordinates too, the Matryoshka run ranks pairs better with them
    # (Spearman at 8 dims 0.816 against the plain run's 0.778; at full width 0.879 and 0.890)
    assert m["dims"]["8"]["sts"]["spearman"] > p["dims"]["8"]["sts"]["spearman"] + 0.02, (m["dims"], p["dims"])


def test_scored_pair_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {"task": "text", "method.name": "cosent", "text.train_file": str(_scored_file(tmp_path)), "text.encoder": "tiny"}
    cases = [
        ({"text.train_columns": "[a, b]"}, "cosent trains on scored pairs: text.train_columns = [sentence1, sentence2, score]"),
        ({"text.train_columns": "[a, b, score]", "text.lazy": True}, "cosent reads scores, which text.lazy does not"),
        ({"text.train_columns": "[a, b, score]", "method.matryoshka_weights": "[1.0]"},
         "method.matryoshka_weights needs method.matryoshka_dims"),
        ({"text.train_columns": "[a, b, score]", "method.matryoshka_dims": "[16, 16]"},
         "Matryoshka dims must be distinct positive integers"),
        ({"text.train_columns": "[a, score, b]"}, "score column 'b' holds"),
    ]
    for extra, message in cases:
        assert main(["train", *as_sets({**base, **extra}), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1], err
