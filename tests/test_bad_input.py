"""Bad input to every command that takes a path: a missing path, the wrong kind of run folder
or recipe, a malformed file — one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from contrastkit.cli import main
from contrastkit.recipes import load_config
from contrastkit.runs import save_run_config


def _run_folder(path: Path, recipe: str) -> Path:
    """A run folder of the recipe's task as training leaves it before its first checkpoint
    (config.yaml): the command must refuse it for its task before loading anything."""
    path.mkdir()
    save_run_config(load_config(recipe), path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    image = _run_folder(root / "image-run", "digits-simclr")
    recsys = _run_folder(root / "recsys-run", "ml100k-lightgcn")
    gan = _run_folder(root / "gan-run", "fashion-mnist-dcgan")
    not_a_run = root / "not-a-run"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("hello\n")
    bad_config = root / "bad-config"
    shutil.copytree(image, bad_config)
    (bad_config / "config.yaml").write_text("method: [unclosed\n")
    bad_checkpoint = root / "bad-checkpoint"
    shutil.copytree(image, bad_checkpoint)
    (bad_checkpoint / "checkpoints").mkdir()
    (bad_checkpoint / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    bad_recipe = root / "bad.yaml"
    bad_recipe.write_text("train: {epochs: [1,\n")
    store = root / "store"
    assert main(["prepare", "digits:test", "--out", str(store), "--size", "8", "--workers", "0", "--quiet"]) == 0
    damaged_store = root / "damaged-store"
    shutil.copytree(store, damaged_store)
    (damaged_store / ".verified.json").unlink(missing_ok=True)
    images = damaged_store / "test.images.u8"
    images.write_bytes(bytes(255 - b for b in images.read_bytes()))  # same size, other pixels
    return {
        "image": image, "recsys": recsys, "gan": gan, "not_a_run": not_a_run, "bad_config": bad_config,
        "bad_checkpoint": bad_checkpoint, "bad_recipe": bad_recipe, "missing": root / "missing",
        "store": store, "damaged_store": damaged_store,
    }


EMBEDS_ONLY = "works on runs of task image / image_text / text; this run's task is 'recsys'"
RECOMMENDS_ONLY = "works on runs of task recsys / sequences; this run's task is 'image'"
CASES: list[tuple[str, str, list[str], str]] = [
    # (command, case, argv with {placeholders}, what the line says)
    ("train", "missing path", ["train", "{missing}/recipe.yaml"], "does not exist"),
    ("train", "wrong kind", ["train", "--out", "{not_a_run}", "--resume"], "--resume: no checkpoint in"),
    ("train", "malformed", ["train", "{bad_recipe}"], "is not valid YAML at line"),
    ("evaluate", "missing path", ["evaluate", "{missing}"], "is not a contrastkit run folder"),
    ("evaluate", "wrong kind", ["evaluate", "{not_a_run}"], "is not a contrastkit run folder (no config.yaml)"),
    ("evaluate", "malformed", ["evaluate", "{bad_checkpoint}"], "cannot be read"),
    ("embed", "missing path", ["embed", "{missing}", "--data", "digits:test", "--out", "{missing}.npy"],
     "is not a contrastkit run folder"),
    ("embed", "wrong kind", ["embed", "{gan}", "--data", "digits:test", "--out", "{missing}.npy"],
     "task 'gan' cannot export embeddings"),
    ("embed", "malformed", ["embed", "{bad_config}", "--data", "digits:test", "--out", "{missing}.npy"], "is not valid YAML"),
    ("compare", "missing path", ["compare", "{missing}/a.yaml", "--budget-minutes", "1", "--out", "{missing}"], "does not exist"),
    ("compare", "wrong kind", ["compare", "digits-simclr", "ml100k-lightgcn", "--budget-minutes", "1", "--out", "{missing}"],
     "compare needs recipes of one task; got digits-simclr: image, ml100k-lightgcn: recsys"),
    ("compare", "malformed", ["compare", "{bad_recipe}", "--budget-minutes", "1", "--out", "{missing}"], "is not valid YAML"),
    ("index", "missing path", ["index", "{missing}", "--data", "digits:test"], "is not a contrastkit run folder"),
    ("index", "wrong kind", ["index", "{recsys}", "--data", "digits:test"], EMBEDS_ONLY),
    ("index", "malformed", ["index", "{bad_config}", "--data", "digits:test"], "is not valid YAML"),
    ("search", "missing path", ["search", "{missing}", "--query", "a cat"], "is not a contrastkit run folder"),
    ("search", "wrong kind", ["search", "{recsys}", "--query", "a cat"], EMBEDS_ONLY),
    ("search", "malformed", ["search", "{bad_config}", "--query", "a cat"], "is not valid YAML"),
    ("recommend", "missing path", ["recommend", "{missing}", "--user", "1"], "is not a contrastkit run folder"),
    ("recommend", "wrong kind", ["recommend", "{image}", "--user", "1"], RECOMMENDS_ONLY),
    ("recommend", "malformed", ["recommend", "{bad_config}", "--user", "1"], "is not valid YAML"),
    ("similar", "missing path", ["similar", "{missing}", "--item", "1"], "is not a contrastkit run folder"),
    ("similar", "wrong kind", ["similar", "{image}", "--item", "1"], RECOMMENDS_ONLY),
    ("similar", "malformed", ["similar", "{bad_config}", "--item", "1"], "is not valid YAML"),
    ("prepare", "missing path", ["prepare", "{missing}/photos", "--out", "{missing}/s"],
     "photos' does not exist; expected an image folder, tar shards"),
    ("prepare", "missing shards", ["prepare", "{missing}/train-{{000..002}}.tar", "--out", "{missing}/s"],
     "3 of its 3 files do not exist"),
    ("prepare", "wrong kind", ["prepare", "{bad_recipe}", "--out", "{missing}/s"],
     "bad.yaml' is not an image folder nor a .tar shard; expected"),
    ("prepare", "unknown name", ["prepare", "imagenet9", "--out", "{missing}/s"],
     "'imagenet9' is neither an image folder, tar shards nor a data set"),
    ("prepare", "size 0", ["prepare", "digits", "--out", "{missing}/s", "--size", "0"],
     "--size must be a positive integer, got 0"),
    ("prepare", "negative size", ["prepare", "digits", "--out", "{missing}/s", "--size", "-3"],
     "--size must be a positive integer, got -3"),
    ("prepare", "out not a store", ["prepare", "digits", "--out", "{not_a_run}"],
     "is not empty and holds no store or interrupted prepare; choose a new or empty folder"),
    ("prepare", "out another store", ["prepare", "digits:test", "--out", "{store}", "--size", "16"],
     "is already a complete store (of 'digits:test' at --size 8); choose a new or empty folder"),
    ("prepare", "out a file", ["prepare", "digits", "--out", "{bad_recipe}"], "exists and is not a folder"),
    ("train", "damaged store",
     ["train", "--set", "data.name=store", "--set", "data.root={damaged_store}", "--out", "{missing}/r"],
     "test.images.u8 does not match its sha256"),
]


@pytest.mark.parametrize(("command", "case", "argv", "message"), CASES, ids=[f"{c}: {k}" for c, k, _, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(
    command: str, case: str, argv: list[str], message: str, folders: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    code = main([a.format(**{k: str(v) for k, v in folders.items()}) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("contrastkit: error: "), err
    assert message in err[0], err[0]
