"""Tests for contrastkit.evaluate: metrics, features, kNN, linear / few-label probes, fine-tuning."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, precision_score, recall_score
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from contrastkit.errors import UserError
from contrastkit.evaluate import (
    classification_metrics,
    compare_finetune,
    extract_features,
    few_label_probe,
    finetune,
    fit_logistic_regression,
    flatten_pixels,
    knn_evaluate,
    knn_predict,
    linear_probe,
    standardize,
)
from contrastkit.evaluate.linear_probe import stratified_split

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only spins

# ---------------------------------------------------------------- helpers


def _digits() -> tuple[Tensor, Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def _digit_images() -> tuple[Tensor, Tensor]:
    """sklearn digits as uint8 (N, 1, 8, 8) images (pixel values 0..16 scaled to 0..240)."""
    x, y = _digits()
    return (x * 15).to(torch.uint8).reshape(-1, 1, 8, 8), y


def _blobs(n: int, d: int, c: int, noise: float, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = 4 * torch.randn(c, d, generator=g)
    y = torch.arange(n) % c
    return centers[y] + noise * torch.randn(n, d, generator=g), y


def _scale(x: Tensor) -> Tensor:
    return x.float() / 255.0


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 32),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ---------------------------------------------------------------- metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    num_classes = 7
    # Classes 5 and 6 never occur as truth; 6 is never predicted either (ignored in macro).
    y_true = torch.randint(0, 5, (200,), generator=g)
    y_pred = torch.randint(0, 6, (200,), generator=g)
    y_pred[:60] = y_true[:60]
    m = classification_metrics(y_true, y_pred, num_classes)
    t, p = y_true.numpy(), y_pred.numpy()
    assert m["accuracy"] == pytest.approx(float((t == p).mean()))
    kw = {"average": "macro", "zero_division": 0}
    assert m["precision_macro"] == pytest.approx(precision_score(t, p, **kw))
    assert m["recall_macro"] == pytest.approx(recall_score(t, p, **kw))
    assert m["f1_macro"] == pytest.approx(f1_score(t, p, **kw))
    assert m["confusion"] == sk_confusion(t, p, labels=list(range(num_classes))).tolist()
    assert m["num_samples"] == 200


def test_classification_metrics_perfect_and_errors() -> None:
    y = torch.tensor([0, 1, 2, 2])
    m = classification_metrics(y, y, 4)
    assert m["accuracy"] == m["precision_macro"] == m["recall_macro"] == m["f1_macro"] == 1.0
    with pytest.raises(UserError, match=r"allowed: 0 \.\. 3"):
        classification_metrics(y, torch.tensor([0, 1, 2, 4]), 4)
    with pytest.raises(UserError, match="shape"):
        classification_metrics(y, y[:3], 4)
    with pytest.raises(UserError, match="num_classes"):
        classification_metrics(y, y, 1)


# ---------------------------------------------------------------- features


class _ModeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 5)
        self.modes: list[bool] = []
        self.grad_modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        self.grad_modes.append(torch.is_grad_enabled())
        return self.lin(x.flatten(1)).reshape(x.shape[0], 5, 1)


def test_extract_features_batches_and_restores_mode() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 2, 2), dtype=torch.uint8)
    enc = _ModeRecorder()
    enc.train()
    feats = extract_features(enc, images, _scale, batch_size=4)
    assert feats.shape == (10, 5) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert enc.modes == [False, False, False]  # 3 batches, all in eval mode
    assert enc.grad_modes == [False, False, False]
    assert enc.training  # restored
    expected = enc.lin(_scale(images).flatten(1)).detach()
    torch.testing.assert_close(feats, expected)
    enc.eval()
    extract_features(enc, images, _scale, batch_size=100, channels_last=True)
    assert not enc.training


def test_extract_features_rejects_float_images() -> None:
    with pytest.raises(UserError, match="uint8"):
        extract_features(nn.Identity(), torch.zeros(2, 1, 2, 2), _scale)
    with pytest.raises(UserError, match="batch_size"):
        extract_features(nn.Identity(), torch.zeros(2, 1, 2, 2, dtype=torch.uint8), _scale, batch_size=0)


def test_flatten_pixels() -> None:
    images = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    out = flatten_pixels(images)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 0.2, 0.4]]))


# ---------------------------------------------------------------- kNN


def _naive_knn(train: Tensor, labels: Tensor, test: Tensor, c: int, k: int, t: float) -> Tensor:
    out = []
    for q in test:
        sims = [
            float(q @ x / (q.norm() * x.norm())) for x in train
        ]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * c
        for i in order:
            votes[int(labels[i])] += math.exp(sims[i] / t)
        out.append(max(range(c), key=lambda j: (votes[j], -j)))
    return torch.tensor(out)


@pytest.mark.parametrize(("k", "block"), [(5, 7), (200, 1024), (1, 3)])
def test_knn_predict_matches_naive_loop(k: int, block: int) -> None:
    g = torch.Generator().manual_seed(k)
    train = torch.randn(60, 8, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    test = torch.randn(25, 8, generator=g)
    pred = knn_predict(train, labels, test, num_classes=4, k=k, temperature=0.1, batch_size=block)
    ref = _naive_knn(train, labels, test, 4, min(k, 60), 0.1)
    assert torch.equal(pred, ref)


def test_knn_weights_matter() -> None:
    # Nearest neighbour (class 1) is much closer than two farther class-0 points: with a low
    # temperature its exp(sim/T) weight outvotes them; with a high one the majority wins.
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    labels = torch.tensor([1, 0, 0])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, test, num_classes=2, k=3, temperature=0.05).item() == 1
    assert knn_predict(train, labels, test, num_classes=2, k=3, temperature=100.0).item() == 0


def test_knn_evaluate_separable_and_errors() -> None:
    x, y = _blobs(300, 16, 5, 0.5, seed=0)
    res = knn_evaluate(x[:200], y[:200], x[200:], y[200:], num_classes=5)
    assert res["accuracy"] == 1.0 and res["k"] == 200
    with pytest.raises(UserError, match="dims"):
        knn_predict(x, y, x[:, :3], num_classes=5)
    with pytest.raises(UserError, match="temperature"):
        knn_predict(x, y, x, num_classes=5, temperature=0.0)


# ---------------------------------------------------------------- linear probe


def test_fit_logistic_regression_matches_sklearn_probabilities() -> None:
    x, y = _blobs(150, 6, 3, 3.0, seed=3)
    (xs,) = standardize(x)
    lam = 1e-2
    w, b = fit_logistic_regression(xs, y, num_classes=3, weight_decay=lam, max_iter=500)
    ours = torch.softmax(xs @ w.T + b, dim=1).double().numpy()
    sk = LogisticRegression(C=1.0 / (lam * xs.shape[0]), tol=1e-10, max_iter=5000)
    with threadpool_limits(1):  # BLAS on tiny matrices: a second thread only spins
        sk.fit(xs.double().numpy(), y.numpy())
    np.testing.assert_allclose(ours, sk.predict_proba(xs.double().numpy()), atol=2e-4)


def test_fit_logistic_regression_gradient_is_zero_at_optimum() -> None:
    x, y = _blobs(80, 5, 4, 3.0, seed=1)
    w, b = fit_logistic_regression(x, y, num_classes=4, weight_decay=0.1, max_iter=500)
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    loss = F.cross_entropy(x @ w.T + b, y) + 0.05 * w.pow(2).sum()
    gw, gb = torch.autograd.grad(loss, [w, b])
    assert gw.abs().max() < 1e-4 and gb.abs().max() < 1e-4


def test_stratified_split_keeps_class_proportions() -> None:
    y = torch.tensor([0] * 50 + [1] * 20 + [2] * 1)
    tr, va = stratified_split(y, 0.2, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(71))
    assert torch.bincount(y[va], minlength=3).tolist() == [10, 4, 0]


def test_linear_probe_separable_data() -> None:
    x, y = _blobs(600, 32, 6, 0.5, seed=0)
    res = linear_probe(x[:400], y[:400], x[400:], y[400:], num_classes=6)
    assert res["accuracy"] == 1.0
    assert res["weight_decay"] in res["val_accuracy"]
    assert len(res["val_accuracy"]) == 6
    assert res["train_accuracy"] == 1.0


def test_linear_probe_agrees_with_sklearn_on_digits() -> None:
    x, y = _digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1200], perm[1200:]
    res = linear_probe(x[tr], y[tr], x[te], y[te], num_classes=10, seed=0)
    xs_tr, xs_te = (t.double().numpy() for t in standardize(x[tr], x[te]))
    with threadpool_limits(1):
        sk = LogisticRegression(max_iter=500).fit(xs_tr, y[tr].numpy())
    sk_acc = sk.score(xs_te, y[te].numpy())
    assert abs(res["accuracy"] - sk_acc) < 0.02
    assert res["accuracy"] > 0.94


def test_linear_probe_deterministic_and_single_value_grid() -> None:
    x, y = _blobs(200, 10, 4, 4.0, seed=2)
    a = linear_probe(x[:150], y[:150], x[150:], y[150:], num_classes=4, seed=5)
    b = linear_probe(x[:150], y[:150], x[150:], y[150:], num_classes=4, seed=5)
    assert a == b
    c = linear_probe(x[:150], y[:150], x[150:], y[150:], num_classes=4, weight_decays=[0.5])
    assert c["weight_decay"] == 0.5 and c["val_accuracy"] == {}


def test_linear_probe_errors() -> None:
    x, y = _blobs(40, 4, 2, 1.0, seed=0)
    with pytest.raises(UserError, match="weight_decays"):
        linear_probe(x, y, x, y, num_classes=2, weight_decays=[-1.0])
    with pytest.raises(UserError, match="val_fraction"):
        linear_probe(x, y, x, y, num_classes=2, val_fraction=1.0)
    with pytest.raises(UserError, match="dims"):
        linear_probe(x, y, x[:, :2], y, num_classes=2)
    with pytest.raises(UserError, match="train_y"):
        linear_probe(x, y + 5, x, y, num_classes=2)


# ---------------------------------------------------------------- few-label probe


def test_few_label_probe_shapes_determinism_and_skips() -> None:
    x, y = _blobs(330, 12, 3, 2.0, seed=4)
    # Class 2 keeps only 12 training rows, so 50 shots is impossible.
    keep = torch.cat([torch.nonzero(y != 2).flatten(), torch.nonzero(y == 2).flatten()[:12]])
    tx, ty = x[keep], y[keep]
    kwargs: dict[str, Any] = {"num_classes": 3, "shots": (1, 10, 50), "draws": 3}
    a = few_label_probe(tx, ty, x, y, seed=0, **kwargs)
    b = few_label_probe(tx, ty, x, y, seed=0, **kwargs)
    c = few_label_probe(tx, ty, x, y, seed=1, **{**kwargs, "shots": (1,)})
    assert a == b
    assert set(a["shots"]) == {1, 10} and set(a["skipped"]) == {50}
    assert "class 2" in a["skipped"][50] and "12" in a["skipped"][50]
    for k, entry in a["shots"].items():
        assert len(entry["accuracies"]) == 3
        assert entry["num_labels"] == 3 * k
        assert entry["mean"] == pytest.approx(float(np.mean(entry["accuracies"])))
        assert entry["std"] == pytest.approx(float(np.std(entry["accuracies"], ddof=1)))
    assert a["shots"][1]["weight_decays"] == [0.1, 0.1, 0.1]  # fixed value below 10 shots
    assert a["shots"][1]["accuracies"] != c["shots"][1]["accuracies"]
    assert a["shots"][10]["mean"] > 0.8


def test_few_label_probe_draws_differ_and_knn() -> None:
    x, y = _blobs(200, 8, 4, 6.0, seed=7)
    res = few_label_probe(x, y, x, y, num_classes=4, shots=(2,), draws=4, method="knn")
    accs = res["shots"][2]["accuracies"]
    assert len(set(accs)) > 1  # different labelled subsets per draw
    assert "weight_decays" not in res["shots"][2]
    with pytest.raises(UserError, match="allowed: knn, linear"):
        few_label_probe(x, y, x, y, num_classes=4, method="linaer")
    with pytest.raises(UserError, match="shots"):
        few_label_probe(x, y, x, y, num_classes=4, shots=(0,))


# ---------------------------------------------------------------- fine-tuning


def test_finetune_learns_and_leaves_encoder_untouched() -> None:
    torch.manual_seed(0)
    images, labels = _digit_images()
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:600], perm[600:1000]
    enc = TinyCNN()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.train()
    rng_before = torch.get_rng_state()

    def augment(batch: Tensor, gen: torch.Generator | None) -> Tensor:
        noise = torch.rand(batch.shape, generator=gen, device=batch.device) * 0.05
        return _scale(batch) + noise

    kwargs: dict[str, Any] = {
        "num_classes": 10, "eval_transform": _scale, "train_transform": augment,
        "epochs": 3, "batch_size": 64, "lr": 1e-2, "seed": 0, "min_steps": 1,
    }
    res = finetune(enc, 32, images[tr], labels[tr], images[te], labels[te], **kwargs)
    assert res["accuracy"] > 0.6  # chance is 0.1
    assert len(res["confusion"]) == 10
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert enc.training
    assert torch.equal(torch.get_rng_state(), rng_before)
    again = finetune(enc, 32, images[tr], labels[tr], images[te], labels[te], **kwargs)
    assert again == res


def test_compare_finetune_and_errors() -> None:
    images, labels = _digit_images()
    tr, te = slice(0, 129), slice(1000, 1200)  # 129 = 2 x 64 + 1: trailing single row merged
    torch.manual_seed(1)
    res = compare_finetune(
        TinyCNN(), TinyCNN(), 32, images[tr], labels[tr], images[te], labels[te],
        num_classes=10, eval_transform=_scale, epochs=1, batch_size=64, optimizer="sgd", lr=0.05,
        min_steps=1,
    )
    assert set(res) == {"pretrained", "fresh", "accuracy_gain"}
    assert res["accuracy_gain"] == pytest.approx(
        res["pretrained"]["accuracy"] - res["fresh"]["accuracy"]
    )
    with pytest.raises(UserError, match="feature_dim=7"):
        finetune(TinyCNN(), 7, images[tr], labels[tr], images[te], labels[te],
                 num_classes=10, eval_transform=_scale, epochs=1)
    with pytest.raises(UserError, match="optimizer"):
        finetune(TinyCNN(), 32, images[tr], labels[tr], images[te], labels[te],
                 num_classes=10, eval_transform=_scale, optimizer="adam")


def test_finetune_on_few_labels_runs_at_least_min_steps() -> None:
    images, labels = _digit_images()
    res = finetune(
        TinyCNN(), 32, images[:40], labels[:40], images[1000:1100], labels[1000:1100],
        num_classes=10, eval_transform=_scale, epochs=1, batch_size=64, min_steps=25,
    )
    assert res["steps"] == 25 and res["epochs"] == 25
