"""The whole evaluation of a run: the same probes on the trained encoder and on its baselines.

Every report shows what self-supervised training bought: each probe (kNN, linear, few-label) runs
on the SSL encoder, on a randomly initialised copy of it, and on raw pixels (and, for a run that
started from saved weights, ``model.init_from``, on those weights); fine-tuning compares the
pretrained encoder with the same network trained from scratch on the same labels.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.data.image.mapped import take
from contrastkit.errors import UserError
from contrastkit.evaluate.episodes import episode_accuracy
from contrastkit.evaluate.features import extract_features, flatten_pixels
from contrastkit.evaluate.few_label import few_label_probe
from contrastkit.evaluate.finetune import finetune
from contrastkit.evaluate.knn import knn_predict
from contrastkit.evaluate.linear_probe import linear_probe, linear_probe_sgd, sgd_epochs
from contrastkit.evaluate.metrics import classification_metrics
from contrastkit.evaluate.tables import format_table, pct

SSL, RANDOM, PIXELS = "ssl", "random_init", "raw_pixels"
STARTING = "init_from"  # the weights a run started from (model.init_from), where it did


def _log(message: str, verbose: bool) -> None:
    if verbose:
        print(message, flush=True)


def probe_features(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int,
    knn: bool = True,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    linear: bool = True,
    shots: list[int] | None = None,
    draws: int = 5,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """kNN, linear probe and few-label probes on one set of frozen features."""
    out: dict[str, Any] = {"feature_dim": int(train_x.shape[1])}
    if knn:
        pred = knn_predict(
            train_x, train_y, test_x, num_classes=num_classes, k=knn_k, temperature=knn_temperature
        )
        out["knn"] = classification_metrics(test_y, pred, num_classes)
    if linear:
        out["linear_probe"] = linear_probe(
            train_x, train_y, test_x, test_y, num_classes=num_classes, seed=seed, device=device
        )
    if shots:
        out["few_label"] = few_label_probe(
            train_x,
            train_y,
            test_x,
            test_y,
            num_classes=num_classes,
            shots=tuple(shots),
            draws=draws,
            seed=seed,
        )
    return out


def evaluate_run(
    model: nn.Module,
    make_random_encoder: Callable[[], nn.Module],
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    class_names: list[str],
    eval_transform: Callable[[Tensor], Tensor],
    train_transform: Callable[[Tensor, torch.Generator | None], Tensor] | None,
    cfg: Any,
    device: torch.device,
    out_dir: Path,
    seed: int = 0,
    channels_last: bool = False,
    verbose: bool = True,
    episode_classes: list[int] | None = None,
    release: Callable[[Tensor], None] | None = None,
    pixel_budget: int | None = None,
    linear_transform: Callable[[Tensor, torch.Generator | None], Tensor] | None = None,
    validation: tuple[Tensor, Tensor] | None = None,
    starting_encoder: nn.Module | None = None,
) -> dict[str, Any]:
    """Probe the SSL encoder and the baselines (N-way K-shot episodes on the test features of
    ``episode_classes`` too, where cfg.episodes > 0), fine-tune, and draw the pictures.

    ``cfg.linear_protocol``: the linear probe on the frozen features (``lbfgs``, results'
    ``linear_probe``), the published SGD protocol on the frozen encoder with
    ``linear_transform`` as its augmentation (``sgd``, results' ``linear_sgd``), or both.
    ``validation`` (images, labels): the held-out slice of the training split; the SSL encoder's
    kNN accuracy on it (bank: the training images) goes to results' ``validation``.
    ``starting_encoder``: the encoder at the weights training started from (a baseline,
    ``init_from``, probed before the random init where ``cfg.baselines``).

    Images are read in blocks of ``cfg.batch_size`` (``release(block)`` after each: a memory-mapped
    store gives the pages back). ``pixel_budget`` (bytes): when the raw-pixel features of the
    train and test images (float32) would be larger, the raw-pixel baseline uses a seeded random
    sample of both that fits (recorded under ``raw_pixels.sampled``); None: all images."""
    results: dict[str, Any] = {"encoders": {}, "class_names": list(class_names)}
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    feature_dim = int(getattr(encoder, "out_dim", 0))
    protocol = getattr(cfg, "linear_protocol", "lbfgs")
    sgd = cfg.linear_probe and protocol in ("sgd", "both")
    if sgd and linear_transform is None:
        raise UserError("eval.linear_protocol sgd needs the probe's augmentation (linear_transform)")
    probe_kwargs: dict[str, Any] = {
        "num_classes": num_classes,
        "knn": cfg.knn,
        "knn_k": cfg.knn_k,
        "knn_temperature": cfg.knn_temperature,
        "linear": cfg.linear_probe and protocol in ("lbfgs", "both"),
        "shots": list(cfg.few_label_shots),
        "draws": cfg.few_label_draws,
        "seed": seed,
        "device": device,
    }

    def features_of(enc: nn.Module) -> tuple[Tensor, Tensor]:
        enc = enc.to(device)
        kwargs = {"batch_size": cfg.batch_size, "device": device, "channels_last": channels_last, "release": release}
        return (
            extract_features(enc, train_images, eval_transform, **kwargs),
            extract_features(enc, test_images, eval_transform, **kwargs),
        )

    t0 = time.perf_counter()
    ssl_train, ssl_test = features_of(encoder)
    _log(f"  features: {tuple(ssl_train.shape)} train, {tuple(ssl_test.shape)} test", verbose)
    results["diagnostics"] = representation_diagnostics(ssl_test, seed=seed)
    if validation is not None:
        results["validation"] = _validation(encoder, ssl_train, train_labels, validation, eval_transform, cfg,
                                            num_classes=num_classes, device=device, channels_last=channels_last)
    # (name, the frozen network for the SGD protocol, its features)
    candidates: list[tuple[str, Callable[[], nn.Module], Callable[[nn.Module], tuple[Tensor, Tensor]]]] = [
        (SSL, lambda: encoder, lambda _: (ssl_train, ssl_test))
    ]
    pixels: tuple[Tensor, Tensor, Tensor | None, Tensor | None] = (train_images, test_images, None, None)
    if cfg.baselines and starting_encoder is not None:
        candidates.append((STARTING, lambda: starting_encoder.to(device), features_of))
    if cfg.baselines:
        torch.manual_seed(seed + 12345)
        candidates.append((RANDOM, lambda: make_random_encoder().to(device), features_of))
        pixels = _pixel_sample(train_images, test_images, pixel_budget, seed)
        candidates.append((PIXELS, nn.Flatten, lambda _: (flatten_pixels(pixels[0]), flatten_pixels(pixels[1]))))
    for name, network, get in candidates:
        net = network()
        tr, te = get(net)
        t1 = time.perf_counter()
        tr_y, te_y = train_labels, test_labels
        if name == PIXELS and pixels[2] is not None:
            tr_y, te_y = train_labels[pixels[2]], test_labels[pixels[3]]
        results["encoders"][name] = probe_features(tr, tr_y, te, te_y, **probe_kwargs)
        if sgd:
            assert linear_transform is not None
            results["encoders"][name]["linear_sgd"] = linear_probe_sgd(
                net, train_images, train_labels, test_images, test_labels, num_classes=num_classes,
                train_transform=linear_transform, eval_transform=eval_transform,
                epochs=sgd_epochs(cfg.linear_epochs, device), batch_size=cfg.linear_batch_size, lr=cfg.linear_lr,
                weight_decay=cfg.linear_weight_decay, seed=seed, device=device,
                channels_last=channels_last and name != PIXELS,
                augmentation=f"random resized crop (scale {list(cfg.linear_crop_scale)}) + horizontal flip (p 0.5)",
            )
        if name == PIXELS and pixels[2] is not None:
            results["encoders"][name]["sampled"] = {"train": len(tr_y), "test": len(te_y), "budget_bytes": pixel_budget}
            _log(f"  raw pixels: a sample of {len(tr_y)} train and {len(te_y)} test images "
                 f"(float pixels of all would exceed {pixel_budget} bytes)", verbose)
        if cfg.episodes:
            results["encoders"][name]["episodes"] = {
                f"{cfg.episode_ways}way{shots}shot": episode_accuracy(
                    te, te_y, ways=cfg.episode_ways, shots=shots, queries=cfg.episode_queries,
                    episodes=cfg.episodes, metric=cfg.episode_metric, classes=episode_classes, seed=seed,
                )
                for shots in cfg.episode_shots
            }
        results["encoders"][name]["seconds"] = time.perf_counter() - t1
        _log(f"  probed {name} in {time.perf_counter() - t1:.1f}s", verbose)

    if cfg.finetune:
        results["finetune"] = {}
        for shots in cfg.finetune_shots:
            idx = _per_class_subset(train_labels, num_classes, shots, seed)
            label = "all" if shots == 0 else f"{shots}_per_class"
            common: dict[str, Any] = {
                "num_classes": num_classes,
                "train_transform": train_transform,
                "eval_transform": eval_transform,
                "epochs": cfg.finetune_epochs,
                "lr": cfg.finetune_lr,
                "device": device,
                "seed": seed,
            }
            t1 = time.perf_counter()
            labelled = take(train_images, idx)  # a copy (of a store: read, not mapped)
            pre = finetune(
                copy.deepcopy(encoder), feature_dim, labelled, train_labels[idx],
                test_images, test_labels, **common,
            )
            torch.manual_seed(seed + 12345)
            scratch = finetune(
                make_random_encoder(), feature_dim, labelled, train_labels[idx],
                test_images, test_labels, **common,
            )
            results["finetune"][label] = {"pretrained": pre, "scratch": scratch, "labels": len(idx)}
            _log(f"  fine-tuned on {label} ({len(idx)} labels) in {time.perf_counter() - t1:.1f}s", verbose)

    if cfg.plots:
        results["plots"] = _plots(model, ssl_test, test_labels, test_images, class_names, out_dir, cfg, seed)
    results["seconds"] = time.perf_counter() - t0
    return results


def _validation(
    encoder: nn.Module, bank: Tensor, bank_labels: Tensor, validation: tuple[Tensor, Tensor],
    transform: Callable[[Tensor], Tensor], cfg: Any, *, num_classes: int, device: torch.device, channels_last: bool,
) -> dict[str, Any]:
    """kNN accuracy of the encoder on the validation slice against the labelled training bank."""
    val = extract_features(encoder, validation[0], transform, batch_size=cfg.batch_size, device=device,
                           channels_last=channels_last)
    pred = knn_predict(bank, bank_labels, val, num_classes=num_classes, k=cfg.knn_k, temperature=cfg.knn_temperature)
    return {"knn": classification_metrics(validation[1], pred, num_classes), "size": int(validation[1].numel())}


def _pixel_sample(
    train: Tensor, test: Tensor, budget: int | None, seed: int
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The images of the raw-pixel baseline: all, or a seeded sample of both splits (the same
    fraction of each) whose float32 pixels fit ``budget`` bytes, with the rows drawn (sorted)."""
    row = 4 * train[0].numel() if train.shape[0] else 1
    n_tr, n_te = train.shape[0], test.shape[0]
    if budget is None or (n_tr + n_te) * row <= budget:
        return train, test, None, None
    fraction = budget / ((n_tr + n_te) * row)
    gen = torch.Generator().manual_seed(seed * 7919 + 29)
    picks = [
        torch.randperm(n, generator=gen)[: max(1, int(n * fraction))].sort().values for n in (n_tr, n_te)
    ]
    return take(train, picks[0]), take(test, picks[1]), picks[0], picks[1]


def _per_class_subset(labels: Tensor, num_classes: int, shots: int, seed: int) -> Tensor:
    """Indices of `shots` random examples per class (all indices when shots == 0)."""
    if shots == 0:
        return torch.arange(labels.shape[0])
    gen = torch.Generator().manual_seed(seed + 777)
    picks = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[torch.randperm(members.numel(), generator=gen)[:shots]])
    return torch.cat(picks)


def _plots(
    model: nn.Module,
    test_feats: Tensor,
    test_labels: Tensor,
    test_images: Tensor,
    class_names: list[str],
    out_dir: Path,
    cfg: Any,
    seed: int,
) -> list[str]:
    from contrastkit.evaluate.plots import (
        plot_embedding_map,
        plot_neighbor_grid,
        plot_training_curves,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    log = out_dir.parent / "train_log.csv"
    if log.exists():
        written.append(str(plot_training_curves(log, out_dir / "training_curves.png")))
    written.append(
        str(
            plot_embedding_map(
                test_feats, test_labels, out_dir / "embedding_tsne.png",
                class_names=class_names, max_points=cfg.tsne_points, seed=seed,
            )
        )
    )
    written.append(
        str(
            plot_neighbor_grid(
                test_images, test_feats, out_dir / "nearest_neighbors.png", seed=seed, labels=test_labels
            )
        )
    )
    return written


def representation_diagnostics(features: Tensor, *, max_rows: int = 4000, seed: int = 0) -> dict[str, float]:
    """Collapse diagnostics of the frozen test features (a random subset of ``max_rows``)."""
    from contrastkit.diagnostics import effective_rank, normalised_std, uniformity

    if features.shape[0] > max_rows:
        gen = torch.Generator().manual_seed(seed)
        features = features[torch.randperm(features.shape[0], generator=gen)[:max_rows]]
    return {
        "emb_std": normalised_std(features),
        "eff_rank": effective_rank(features),
        "uniformity": uniformity(features),
        "dim": float(features.shape[1]),
    }


def results_table(results: dict[str, Any]) -> str:
    """A small fixed-width table of accuracies (%), one row per encoder."""
    enc = results.get("encoders", {})
    if not enc:
        return "(no labelled evaluation)"
    shots: list[int] = []
    for r in enc.values():
        for key in r.get("few_label", {}).get("shots", {}):
            if int(key) not in shots:
                shots.append(int(key))
    episodes: list[str] = []
    for r in enc.values():
        episodes += [key for key in r.get("episodes", {}) if key not in episodes]
    lbfgs = any("linear_probe" in r for r in enc.values())
    sgd = next((r["linear_sgd"]["schedule"] for r in enc.values() if "linear_sgd" in r), None)
    headers = ["features", "kNN"] + (["linear"] if lbfgs or not sgd else [])
    headers += [f"linear SGD {sgd['epochs']} ep."] if sgd else []
    headers += [f"{k}/class" for k in shots] + [_episode_name(e) for e in episodes]
    rows = []
    for name, r in enc.items():
        row = [name]
        row.append(pct(r.get("knn", {}).get("accuracy")))
        if lbfgs or not sgd:
            row.append(pct(r.get("linear_probe", {}).get("accuracy")))
        if sgd:
            row.append(pct(r.get("linear_sgd", {}).get("accuracy")))
        fl = r.get("few_label", {}).get("shots", {})
        for k in shots:
            entry = fl.get(str(k)) or fl.get(k)
            if entry and entry.get("mean") is not None:
                row.append(f"{100 * entry['mean']:.1f}±{100 * entry['std']:.1f}")
            else:
                row.append("-")
        for key in episodes:
            ep = r.get("episodes", {}).get(key)
            row.append(f"{100 * ep['mean']:.1f}±{100 * ep['ci95']:.1f}" if ep else "-")
        rows.append(row)
    lines = [format_table(headers, rows)]
    if sgd:
        lines.append(
            f"linear SGD: the published protocol on the frozen encoder: SGD (momentum {sgd['momentum']}, lr {sgd['lr']:g}, "
            f"{sgd['lr_schedule']}, weight decay {sgd['weight_decay']:g}, batch {sgd['batch_size']}, {sgd['epochs']} epochs) "
            f"with {sgd['train_augmentation']}"
            + ("; linear: L-BFGS on frozen features" if lbfgs else "")
        )
    val = results.get("validation")
    if val:
        lines.append(f"validation split ({val['size']} images held out of the training split): "
                     f"kNN {pct(val['knn']['accuracy'])} (ssl)")
    ft = results.get("finetune")
    if ft:
        ft_rows = [
            [label, pct(v["pretrained"].get("accuracy")), pct(v["scratch"].get("accuracy"))]
            for label, v in ft.items()
        ]
        lines.append("")
        lines.append(format_table(["fine-tune labels", "pretrained", "from scratch"], ft_rows))
    diag = results.get("diagnostics")
    if diag:
        lines.append("")
        lines.append(
            f"representation: effective rank {diag['eff_rank']:.1f} of {int(diag['dim'])} dims, "
            f"std {diag['emb_std']:.2f} (collapse: 0, healthy ~1), uniformity {diag['uniformity']:.2f}"
        )
    return "\n".join(lines)


def _episode_name(key: str) -> str:
    """'5way1shot' → '5-way 1-shot'."""
    ways, _, shots = key.partition("way")
    return f"{ways}-way {shots.removesuffix('shot')}-shot"


def compare_figures(results: dict[str, Any]) -> dict[str, Any]:
    """An image run's headline figures for ``contrastkit compare``: accuracies (%) of the SSL
    encoder (kNN, linear, the first few-label probe), effective rank, collapse."""
    ev = results.get("eval", {})
    ssl = ev.get("encoders", {}).get("ssl", {})
    shots = (results.get("config", {}).get("eval", {}).get("few_label_shots") or [10])[0]
    few = ssl.get("few_label", {}).get("shots", {}).get(str(shots), {}) or {}
    few_text = pct(few.get("mean"))
    if few.get("std") is not None:
        few_text += f"±{100 * few['std']:.1f}"
    rank = ev.get("diagnostics", {}).get("eff_rank")
    collapsed = results.get("train", {}).get("collapsed_at_step")
    figures = {
        "kNN": pct(ssl.get("knn", {}).get("accuracy")),
        "linear": pct(ssl.get("linear_probe", {}).get("accuracy")),
        f"{shots}/class": few_text,
        "eff. rank": None if rank is None else f"{rank:.1f}",
        "collapsed at": collapsed,
    }
    if "linear_sgd" in ssl:  # another protocol: its own column, never mixed with the L-BFGS probe's
        figures["linear SGD"] = pct(ssl["linear_sgd"].get("accuracy"))
    return figures
