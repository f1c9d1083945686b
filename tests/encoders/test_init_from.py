"""model.init_from: state dicts in torchvision / timm layout (wrapped, prefixed, with a classifier)
load strictly; a run started from another run begins at its weights and resumes exactly; bad
files and mismatches are one-line errors."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from contrastkit.cli import main
from contrastkit.encoders import build_image_encoder
from contrastkit.encoders.weights import load_encoder_weights
from contrastkit.errors import UserError
from contrastkit.recipes import load_config
from contrastkit.runner import train_run
from contrastkit.runs import checkpoint_part, new_run_dir
from contrastkit.training import Callback, Trainer, load_checkpoint

from ..conftest import InterruptAt, Interrupted, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


def test_torchvision_and_timm_state_dicts_load_with_wrappers_prefixes_and_classifiers(tmp_path: Path) -> None:
    """A torchvision ResNet-18 saved by a DDP training script ({'state_dict': {'module.conv1...'}},
    fc included) loads into model.encoder=resnet18 with the ImageNet stem and computes what the
    torchvision model computes; a timm ResNet's keys under 'backbone.' beside a projector load into
    timm/resnet18 (the projector ignored, timm's classifier dropped)."""
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, tmp_path / "tv.pth")
    ours = build_image_encoder("resnet18", 3, cifar_stem=False, image_size=64).eval()
    line = load_encoder_weights(ours, tmp_path / "tv.pth")
    assert "loaded 120 tensors (11,176,512 parameters) into the encoder" in line
    assert "keys under 'module.'" in line and "classifier fc.bias, fc.weight dropped" in line
    x = torch.randn(2, 3, 64, 64)
    tv.fc = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)

    timm = pytest.importorskip("timm")
    source = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["projector.0.weight"] = torch.randn(4, 512)
    save_file(state, str(tmp_path / "timm.safetensors"))
    ours = build_image_encoder("timm/resnet18", 3, image_size=32).eval()
    line = load_encoder_weights(ours, tmp_path / "timm.safetensors")
    assert "keys under 'backbone.', 1 other tensor(s) ignored" in line and "classifier fc.bias, fc.weight dropped" in line
    source.reset_classifier(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), source(x), rtol=0, atol=0)


def test_mismatches_and_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = build_image_encoder("small_resnet", 1, width=8)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    state.pop("features.0.weight")
    state.pop("features.1.weight")
    state["extra.weight"] = torch.zeros(2)
    state["features.3.body.0.weight"] = torch.zeros(8, 8, 5, 5)
    save_file(state, str(tmp_path / "off.safetensors"))
    wide = build_image_encoder("small_resnet", 1, width=16)
    save_file(wide.state_dict(), str(tmp_path / "wide.safetensors"))
    (tmp_path / "garbage.pt").write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 20)
    (tmp_path / "notes.txt").write_text("hello\n")
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "no-tensors.pt")
    torch.save({"head.weight": torch.zeros(3)}, tmp_path / "unrelated.pt")
    (tmp_path / "empty-folder").mkdir()
    cases = [
        ("off.safetensors", "does not fit the encoder: 2 missing key(s) (features.0.weight, features.1.weight); "
                            "1 unexpected key(s) (extra.weight); 1 shape mismatch(es), file vs encoder "
                            "(features.3.body.0.weight 8×8×5×5 vs 8×8×3×3)"),
        ("wide.safetensors", "75 shape mismatch(es), file vs encoder (features.0.weight 16×1×3×3 vs 8×1×3×3, "
                             "features.1.weight 16 vs 8, features.1.bias 16 vs 8, … 72 more)"),
        ("missing.safetensors", "missing.safetensors': no such file or folder (expected a run folder or a .safetensors"),
        ("garbage.pt", "garbage.pt' cannot be read as a torch state dict: "),
        ("garbage.safetensors", "garbage.safetensors' cannot be read as safetensors: "),
        ("notes.txt", "notes.txt': expected a run folder or a .safetensors / .pt / .pth / .bin / .ckpt file, not a .txt file"),
        ("no-tensors.pt", "no-tensors.pt' holds no state dict of tensors (its keys: epoch, optimizer)"),
        ("unrelated.pt", "unrelated.pt': none of its 1 tensors (head.weight) fit the encoder (features.0.weight, "),
        ("empty-folder", "empty-folder' is a folder but not a trained run (no encoder.safetensors, no checkpoints/last.pt)"),
    ]
    for name, message in cases:
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        with pytest.raises(UserError) as info:
            load_encoder_weights(encoder, tmp_path / name)
        text = str(info.value)
        assert text.startswith(f"model.init_from '{tmp_path / name}") and message in text and "\n" not in text, text
        assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # nothing loaded


class AtStart(Callback):
    """Records, before the first step, the online encoder, its momentum copy and the features of
    a few digits through a copy of the encoder in eval mode (the encoder itself stays untouched)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.seen: dict[str, Any] = {}

    def on_start(self, trainer: Trainer) -> None:
        model: Any = trainer.step_fn.model  # type: ignore[attr-defined]
        self.seen["encoder"] = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
        self.seen["target"] = {k: v.detach().clone() for k, v in model.target.target[0].state_dict().items()}
        with torch.no_grad():
            encoder = copy.deepcopy(model.encoder).to(memory_format=torch.contiguous_format)  # as the reference
            self.seen["features"] = encoder.eval()(self.images)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = checkpoint_part(load_checkpoint(run / "checkpoints" / "last.pt"), "model")
    return weights


def test_a_run_from_another_runs_folder_starts_at_its_weights_and_resumes_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SimCLR run A, then BYOL run B with model.init_from=A: before B's first step its encoder and
    BYOL's momentum copy hold A's encoder and give A's features; B interrupted and resumed (with A
    gone: a resumed run does not read init_from again) ends where an uninterrupted B ends."""
    a = new_run_dir(cfg_a := load_config("digits-simclr", tiny_overrides(**{"train.max_steps": 2})), str(tmp_path / "a"),
                    resume=False)
    train_run(cfg_a, a, progress=False, verbose=False)
    trained = load_file(str(a / "encoder.safetensors"))
    reference = build_image_encoder("small_resnet", 1, width=8)
    line = load_encoder_weights(reference, a / "checkpoints" / "last.pt")  # a checkpoint: its model's encoder.*
    assert "keys under 'encoder.', " in line and all(torch.equal(v, trained[k]) for k, v in reference.state_dict().items())
    images = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        want = reference.eval()(images)

    cfg_b = load_config("digits-byol", tiny_overrides(**{"model.init_from": str(a), "train.max_steps": 4,
                                                          "train.checkpoint_every": 2}))
    full = new_run_dir(cfg_b, str(tmp_path / "full"), resume=False)
    start = AtStart(images)
    capsys.readouterr()
    train_run(cfg_b, full, progress=False, verbose=True, callbacks=[start])
    params = sum(p.numel() for p in reference.parameters())
    assert f"model.init_from: loaded {len(trained)} tensors ({params:,} parameters) into the encoder from {a} (the run's " \
           "encoder.safetensors)" in capsys.readouterr().out
    for seen in (start.seen["encoder"], start.seen["target"]):
        assert seen.keys() == trained.keys() and all(torch.equal(seen[k], trained[k]) for k in trained)
    torch.testing.assert_close(start.seen["features"], want, rtol=0, atol=0)

    cut = new_run_dir(cfg_b, str(tmp_path / "cut"), resume=False)
    with pytest.raises(Interrupted):
        train_run(cfg_b, cut, progress=False, verbose=False, callbacks=[InterruptAt(3)])
    shutil.rmtree(a)
    train_run(cfg_b, cut, resume=True, progress=False, verbose=False)
    x, y = _weights(full), _weights(cut)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_a_run_from_saved_weights_is_evaluated_against_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The evaluation of a run that started from model.init_from adds those weights as a baseline
    (``init_from``, between the trained encoder and the random init): its probes are exactly those
    of run A's own trained encoder, A being where it started. With A gone, that row is left out
    with a note and the rest is evaluated."""
    from contrastkit.runner import evaluate, load_run

    probe = {"train.max_steps": 3, "eval.few_label_shots": "[5]", "eval.finetune": "false", "eval.plots": "false"}
    a = new_run_dir(cfg_a := load_config("digits-simclr", tiny_overrides(**probe)), str(tmp_path / "a"), resume=False)
    train_run(cfg_a, a, progress=False, verbose=False)
    own = evaluate(load_run(a), verbose=False, report=False)["encoders"]
    cfg_b = load_config("digits-byol", tiny_overrides(**probe, **{"model.init_from": str(a)}))
    b = new_run_dir(cfg_b, str(tmp_path / "b"), resume=False)
    train_run(cfg_b, b, progress=False, verbose=False)
    encoders = evaluate(load_run(b), verbose=False, report=False)["encoders"]
    assert list(encoders) == ["ssl", "init_from", "random_init", "raw_pixels"]
    for probe_name in ("knn", "linear_probe", "few_label"):
        started, trained_a = ({k: v for k, v in r[probe_name].items() if k != "seconds"}
                              for r in (encoders["init_from"], own["ssl"]))
        assert started == trained_a, probe_name
    assert encoders["random_init"]["knn"] == own["random_init"]["knn"]  # the same network, the same random init
    shutil.rmtree(a)
    capsys.readouterr()
    encoders = evaluate(load_run(b), verbose=True, report=False)["encoders"]
    assert list(encoders) == ["ssl", "random_init", "raw_pixels"]
    assert f"the starting weights model.init_from {str(a)!r} are gone: that baseline is left out" in capsys.readouterr().out


def test_train_reports_a_bad_init_from_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sets = [x for pair in tiny_overrides(**{"model.init_from": str(tmp_path / "w.pth")}) for x in ("--set", pair)]
    assert main(["train", "--out", str(tmp_path / "run"), "--no-eval", "--quiet", *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("contrastkit: error: model.init_from ") and "no such file or folder" in err[0]
