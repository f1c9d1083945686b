"""contrastkit.methods as a user reads it: every registered method is exported and its class
docstring states the batch it trains on; the documented batches train the image, recommender
and skip-gram methods in a hand-written loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import contrastkit.methods as M
from contrastkit.augment import build_augmentation, default_augmentation

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES: dict[str, type[nn.Module]] = {
    "simclr": M.SimCLR, "moco_v2": M.MoCoV2, "moco_v3": M.MoCoV3, "byol": M.BYOL, "simsiam": M.SimSiam,
    "barlow_twins": M.BarlowTwins, "vicreg": M.VICReg, "supcon": M.SupCon, "simcse": M.SimCSE, "cosent": M.CoSENT,
    "angle": M.AnglE, "clip": M.CLIP,
    "mf": M.MFBPR, "lightgcn": M.LightGCN, "sgl": M.SGL, "simgcl": M.SimGCL, "xsimgcl": M.XSimGCL,
    "skipgram": M.SkipGram, "dcgan": M.DCGAN, "contrad": M.ContraD, "pixels": M.Pixels, "state": M.State,
    "curl": M.CURL, "atc": M.ATC, "swav": M.SwAV, "dino": M.DINO, "nnclr": M.NNCLR,
}


def test_every_method_is_exported_and_documents_its_batch() -> None:
    # siglip: CLIP with SigLIPOptions; simcse_supervised: SimCSE on (anchor, positive, negative) views
    assert {spec.name for spec in M.all_methods()} <= set(CLASSES) | {"siglip", "simcse_supervised"}
    for name, cls in CLASSES.items():
        assert cls.__name__ in M.__all__, name
        doc = cls.__doc__ or ""  # the class's own docstring, not an inherited one
        assert any(word in doc for word in ("Batch", "Steps:", "update(", "options only")), f"{name}: no batch format"


def _encoder() -> nn.Module:
    enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    enc.out_dim = 8  # type: ignore[assignment]
    return enc


@pytest.mark.parametrize("cls", [M.SimCLR, M.MoCoV2, M.MoCoV3, M.BYOL, M.SimSiam, M.BarlowTwins, M.VICReg, M.SupCon,
                                 M.SwAV, M.DINO, M.NNCLR])
def test_image_methods_train_on_the_documented_batch(cls: type[M.TwoViewMethod]) -> None:
    torch.manual_seed(0)
    method = cls(_encoder(), 8, projection_hidden_dim=16, projection_dim=8)
    aug = build_augmentation(default_augmentation(3, 16), size=16, channels=3, mean=[0.5] * 3, std=[0.25] * 3)
    images = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01)
    for step in range(2):
        batch: dict[str, object] = {"views": [aug(images), aug(images)]}
        if cls is M.SupCon:
            batch["labels"] = torch.tensor([0, 1, 0, 1, -1, 2, 2, -1])
        out = method.training_step(batch)
        assert out.loss.dim() == 0 and bool(torch.isfinite(out.loss))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        method.on_step_end(step, 2)


def test_a_recommender_trains_on_documented_bpr_triples() -> None:
    pairs = torch.tensor([[0, 0], [0, 1], [1, 2], [2, 0], [2, 3]])
    model = M.LightGCN(3, 4, pairs, embedding_dim=8, layers=2)
    batch = {"users": torch.tensor([0, 1, 2]), "pos": torch.tensor([1, 2, 3]), "neg": torch.tensor([3, 0, 1]), "epoch": 0}
    out = model.training_step(batch)
    users, items = model()
    u, p, n = batch["users"], batch["pos"], batch["neg"]
    bpr = -torch.nn.functional.logsigmoid((users[u] * items[p]).sum(1) - (users[u] * items[n]).sum(1)).mean()
    torch.testing.assert_close(out.logs["bpr"], bpr.detach())


def test_skipgram_trains_on_the_documented_batch() -> None:
    model = M.SkipGram(6, embedding_dim=4)
    batch = {"centers": torch.tensor([0, 3]), "pair_center": torch.tensor([0, 0, 1]), "contexts": torch.tensor([1, 2, 4]),
             "negatives": torch.tensor([[5, 2], [1, 0]])}
    with torch.no_grad():
        model.output.weight.normal_()
    out = model.training_step(batch)
    c, o = model.input.weight, model.output.weight
    want = 0.0
    for pair, centre in enumerate(batch["pair_center"].tolist()):  # word2vec's loss, pair by pair
        cv = c[batch["centers"][centre]]
        want -= torch.nn.functional.logsigmoid(cv @ o[batch["contexts"][pair]])
        for neg in batch["negatives"][centre]:
            want -= torch.nn.functional.logsigmoid(-(cv @ o[neg]))
    torch.testing.assert_close(out.logs["loss"].float() * 3, want.detach())
