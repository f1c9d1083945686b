"""contrastkit.losses exports every loss of the package (functions and modules), SigLIP included."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import contrastkit.losses as losses

HELPERS = {"InfoNCEInputs", "check_margin", "check_labelled_batch"}  # argument types and checks, not losses


def test_every_public_loss_is_exported() -> None:
    missing = []
    for info in pkgutil.iter_modules(losses.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"contrastkit.losses.{info.name}")
        for name, obj in vars(module).items():
            defined_here = (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__
            if defined_here and not name.startswith("_") and name not in HELPERS and name not in losses.__all__:
                missing.append(f"{info.name}.{name}")
    assert not missing, f"not in contrastkit.losses.__all__: {missing}"
    assert {"SigLIPLoss", "siglip_loss"} <= set(losses.__all__)
    assert all(hasattr(losses, name) for name in losses.__all__)
