"""User and item vectors of a recommendation run (``embeddings.safetensors``), and what they
answer: the top items for a user (items the user has seen left out), the items closest to an
item, and the embeddings file ``contrastkit embed`` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.interactions import InteractionData
from contrastkit.errors import UserError, check_choice
from contrastkit.training.checkpoint import save_safetensors

EMBEDDINGS_FILE = "embeddings.safetensors"
EMBED_SPECS = ("all", "users", "items")


def save_vectors(run_dir: Path, users: Tensor, items: Tensor) -> None:
    save_safetensors({"user": users.cpu().contiguous(), "item": items.cpu().contiguous()}, Path(run_dir) / EMBEDDINGS_FILE)


def load_vectors(run_dir: Path) -> tuple[Tensor, Tensor] | None:
    """User (U, D) and item (I, D) vectors saved in the run folder, or None."""
    path = Path(run_dir) / EMBEDDINGS_FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return tensors["user"], tensors["item"]


def nearest(vectors: Tensor, i: int, k: int) -> list[tuple[int, float]]:
    """The k rows closest to row i by cosine (row i left out): (row, score)."""
    normed = torch.nn.functional.normalize(vectors, dim=1)
    sims = normed @ normed[i]
    sims[i] = -torch.inf
    top = torch.topk(sims, min(k, vectors.shape[0] - 1))
    return list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


def recommend(data: InteractionData, users: Tensor, items: Tensor, user: str, k: int) -> list[dict[str, Any]]:
    """Top-k items (dot product) for one of the data's own user ids; items the user has seen excluded."""
    u = data.user_index(user)
    scores = items @ users[u]
    all_pairs = data.all_pairs()
    seen = all_pairs[all_pairs[:, 0] == u, 1]
    scores[torch.as_tensor(seen, dtype=torch.long)] = -torch.inf
    top = torch.topk(scores, min(k, data.n_items - seen.size))
    return [
        {"item": data.item_ids[i], "title": data.title(i), "score": float(s)}
        for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def similar_items(data: InteractionData, items: Tensor, item: str, k: int) -> list[dict[str, Any]]:
    """The k items whose vectors are closest (cosine) to one of the data's own item ids."""
    rows = nearest(items, data.item_index(item), k)
    return [{"item": data.item_ids[j], "title": data.title(j), "score": s} for j, s in rows]


def write_embeddings(out: Path, vectors: np.ndarray, items: list[dict[str, Any]]) -> tuple[int, int]:
    """`contrastkit embed` of items: the vectors → OUT (.npy, float32); their texts, where the
    items are texts, → <stem>.texts.txt (one per line)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.astype(np.float32))
    if items and "text" in items[0]:
        out.with_name(out.stem + ".texts.txt").write_text("\n".join(i["text"].replace("\n", " ") for i in items) + "\n")
    return int(vectors.shape[0]), int(vectors.shape[1])


def cached_vectors(run_dir: Path, compute: Any) -> tuple[Tensor, Tensor]:
    """The user and item vectors saved in the run folder, or ``compute()``-d once and saved."""
    saved = load_vectors(run_dir)
    if saved is not None:
        return saved
    users, items = compute()
    save_vectors(run_dir, users, items)
    return users, items


def write_vectors(data: InteractionData, users: Tensor, items: Tensor, spec: str | None, out: Path) -> tuple[int, int]:
    """'users' / 'items' → .npy (+ <stem>.ids.txt); 'all' (default) → .npz with
    user_embeddings, item_embeddings, user_ids, item_ids."""
    spec = spec or "all"
    check_choice("embedding set (--data) of this run", spec, EMBED_SPECS)
    out.parent.mkdir(parents=True, exist_ok=True)
    if spec == "all":
        if out.suffix != ".npz":
            raise UserError(f"--out {str(out)!r}: user and item embeddings go into one .npz file; name it *.npz")
        np.savez(
            out, user_embeddings=users.numpy(), item_embeddings=items.numpy(),
            user_ids=np.asarray(data.user_ids), item_ids=np.asarray(data.item_ids),
        )
        return int(users.shape[0] + items.shape[0]), int(users.shape[1])
    matrix, ids = (users, data.user_ids) if spec == "users" else (items, data.item_ids)
    np.save(out, matrix.numpy())
    out.with_name(out.stem + ".ids.txt").write_text("\n".join(ids) + "\n")
    return int(matrix.shape[0]), int(matrix.shape[1])


class UserItemVectors:
    """What a run with user and item vectors answers (a mixin of the recommendation runs):
    ``embed`` them, ``recommend`` items to a user. The run supplies ``vectors()`` and
    ``interactions()``."""

    def vectors(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def interactions(self) -> InteractionData:
        raise NotImplementedError

    def embed(self, spec: str | None, out: Path, *, batch_size: int = 512) -> tuple[int, int]:
        """User and / or item vectors (``--data users|items|all``)."""
        users, items = self.vectors()
        return write_vectors(self.interactions(), users, items, spec, out)

    def recommend(self, user: str, k: int = 10) -> list[dict[str, Any]]:
        """Top-k items for one of the data's own user ids; items the user has seen are excluded."""
        users, items = self.vectors()
        return recommend(self.interactions(), users, items, user, k)

    def compare_row(self, results: dict[str, Any]) -> dict[str, Any]:
        """Recall@20 and NDCG@20 of the trained model on the test split (``contrastkit compare``,
        a sweep's final table)."""
        method = results.get("config", {}).get("method", {}).get("name")
        test = results.get("eval", {}).get("test", {}).get(method, {})
        return {key: test.get(key) for key in ("recall@20", "ndcg@20")}
