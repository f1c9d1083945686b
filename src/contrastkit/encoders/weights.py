"""``model.init_from``: start a run's encoder from saved weights instead of a random init.

The source is a run folder (its ``encoder.safetensors``, or the ``encoder.*`` tensors of its
last checkpoint while it has none) or a state-dict file: ``.safetensors``, or a ``torch.save``
file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``; read with ``weights_only=True``), perhaps wrapped
in a ``state_dict`` / ``model`` / ``state`` entry. Keys may be in the layout of the bare
backbone (torchvision's or timm's: ``conv1.weight``, ``layer1.0.bn1.weight``, ...) or carry a
wrapper's prefix (``module.``, ``encoder.``, ``backbone.``, ``model.``, ``_orig_mod.``): the
prefix that makes the most keys match is stripped, and the tensors without it are ignored (a
projection head beside the backbone). A classifier the encoder does not have (torchvision's
``fc``, a timm model's head) is dropped. Everything else loads strictly: a missing or
unexpected key or a shape that differs is a one-line error naming them.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.encoders.image import ModelConfig, describe_encoder
from contrastkit.errors import UserError

ENCODER_FILE = "encoder.safetensors"  # what an image run writes beside its checkpoints
TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".ckpt")
WRAPPERS: tuple[str, ...] = ("state_dict", "model", "state", "module")  # dict entries that hold the weights
PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "encoder.", "backbone.", "model.")
SHOWN = 3  # keys named in an error, per kind


def start_encoder(encoder: nn.Module, model: ModelConfig, size: int, *, resume: bool, log: Callable[[str], None]) -> None:
    """At the start of training: say what was built (the stem ``auto`` chose, the timm model) and,
    on a fresh run, load ``model.init_from`` into ``encoder`` (a resumed run restores its checkpoint)."""
    for line in describe_encoder(encoder, model, size):
        log(line)
    if model.init_from is not None and not resume:
        log(load_encoder_weights(encoder, model.init_from))


def load_encoder_weights(encoder: nn.Module, source: str | Path, what: str = "model.init_from") -> str:
    """Load ``source`` strictly into ``encoder`` (see the module's doc); returns the line to print."""
    state, where = read_weights(source, what)
    own = encoder.state_dict()
    mapped, prefix, ignored = _align(state, own)
    if not mapped:
        raise UserError(
            f"{what} {str(source)!r}: none of its {len(state)} tensors ({_some(sorted(state))}) fit the encoder "
            f"({_some(sorted(own))})"
        )
    classifier = tuple(getattr(encoder, "classifier", ()))
    dropped = sorted(k for k in mapped if k not in own and k.startswith(classifier)) if classifier else []
    for key in dropped:
        del mapped[key]
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in mapped if k not in own]
    shapes = [f"{_bare(k)} {_shape(mapped[k])} vs {_shape(own[k])}"
              for k in own if k in mapped and mapped[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        problems = [f"{len(found)} {kind} ({_some(found)})" for kind, found in (
            ("missing key(s)", [_bare(k) for k in missing]), ("unexpected key(s)", [_bare(k) for k in unexpected]),
            ("shape mismatch(es), file vs encoder", shapes)) if found]
        raise UserError(f"{what} {str(source)!r} does not fit the encoder: {'; '.join(problems)}{_run_model(source)}")
    for key, value in own.items():  # BatchNorm's step counters, where an older file has none
        mapped.setdefault(key, value)
    encoder.load_state_dict(mapped, strict=True)
    notes = [where]
    if prefix:
        notes.append(f"keys under {prefix!r}" + (f", {ignored} other tensor(s) ignored" if ignored else ""))
    if dropped:
        notes.append(f"classifier {_some([_bare(k) for k in dropped])} dropped")
    params = sum(int(p.numel()) for p in encoder.parameters())
    return f"{what}: loaded {len(own)} tensors ({params:,} parameters) into the encoder from {source} ({'; '.join(notes)})"


def read_weights(source: str | Path, what: str = "model.init_from") -> tuple[dict[str, Tensor], str]:
    """The tensors of a run folder or a state-dict file, and where they came from (in words)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_run(path, what)
    if not path.exists():
        raise UserError(f"{what} {str(source)!r}: no such file or folder (expected a run folder or a .safetensors / "
                        f"{' / '.join(TORCH_SUFFIXES)} file)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors"
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{what} {str(source)!r} cannot be read as safetensors: {_first_line(exc)}") from None
    if path.suffix not in TORCH_SUFFIXES:
        raise UserError(f"{what} {str(source)!r}: expected a run folder or a .safetensors / "
                        f"{' / '.join(TORCH_SUFFIXES)} file, not a {path.suffix or 'suffix-less'} file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file, or one holding more than tensors (pickled objects)
        raise UserError(f"{what} {str(source)!r} cannot be read as a torch state dict: {_first_line(exc)}") from None
    return _unwrap(loaded, what, source), "torch.save file"


def _from_run(path: Path, what: str) -> tuple[dict[str, Tensor], str]:
    """A run folder's encoder: encoder.safetensors, else its last checkpoint's model weights."""
    from contrastkit.runs import CHECKPOINTS, load_run_weights

    if (path / ENCODER_FILE).is_file():
        state, _ = read_weights(path / ENCODER_FILE, what)
        return state, f"the run's {ENCODER_FILE}"
    if any((path / CHECKPOINTS / name).is_file() for name in ("last.pt", "previous.pt")):
        weights = load_run_weights(path)
        return {k: v for k, v in weights.items() if isinstance(v, Tensor)}, "the run's last checkpoint"
    raise UserError(f"{what} {str(path)!r} is a folder but not a trained run (no {ENCODER_FILE}, no {CHECKPOINTS}/last.pt)")


def _unwrap(loaded: Any, what: str, source: str | Path) -> dict[str, Tensor]:
    """The tensors of a loaded file: a state dict, or one inside ``state_dict`` / ``model`` / ...
    (a wrapper first: a training checkpoint may hold stray tensors, e.g. a random state, beside it)."""
    for _ in range(4):
        if not isinstance(loaded, dict):
            break
        inner = next((loaded[k] for k in WRAPPERS if isinstance(loaded.get(k), dict)), None)
        if inner is not None:
            loaded = inner
            continue
        tensors = {str(k): v for k, v in loaded.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
        break
    keys = f" (its keys: {_some(sorted(map(str, loaded)))})" if isinstance(loaded, dict) else ""
    raise UserError(f"{what} {str(source)!r} holds no state dict of tensors{keys}")


def _align(state: dict[str, Tensor], own: dict[str, Tensor]) -> tuple[dict[str, Tensor], str, int]:
    """``state`` renamed to the encoder's keys: the wrapper prefix stripped (and our wrapper's
    ``net.`` added) that makes the most keys match; returns (tensors, prefix, tensors left out)."""
    inner = "net." if own and all(k.startswith("net.") for k in own) else ""  # torchvision / timm inside our wrapper
    stems = [""] + ["".join(p) for n in (1, 2) for p in product(PREFIXES, repeat=n)]
    best: tuple[int, dict[str, Tensor], str] = (-1, {}, "")
    for prefix, add in product(stems, dict.fromkeys(["", inner])):
        if prefix and not any(k.startswith(prefix) for k in state):
            continue
        mapped = {add + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        score = sum(k in own for k in mapped)
        if score > best[0]:
            best = (score, mapped, prefix)
    score, mapped, prefix = best
    if score <= 0:
        return {}, "", 0
    return mapped, prefix, len(state) - len(mapped)


def _run_model(source: str | Path) -> str:
    """" (that run's model: encoder ..., width ...)" for a run folder, to set beside this run's."""
    path = Path(source).expanduser() / "config.yaml"
    if not path.is_file():
        return ""
    import yaml

    try:
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
    except (yaml.YAMLError, OSError, AttributeError):
        return ""
    keys = ("encoder", "width", "cifar_stem", "timm_kwargs")
    shown = ", ".join(f"{k} {model[k]}" for k in keys if model.get(k) not in (None, {}))
    return f" (that run's model: {shown})" if shown else ""


def _shape(t: Tensor) -> str:
    return "×".join(map(str, t.shape)) or "scalar"


def _bare(key: str) -> str:
    return key.removeprefix("net.")


def _some(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f", … {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
