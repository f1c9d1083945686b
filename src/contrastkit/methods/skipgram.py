"""Skip-gram with negative sampling (word2vec: Mikolov et al. 2013, arXiv:1310.4546; over user
histories, item2vec: Barkan & Koenigstein 2016, arXiv:1603.04259): each token predicts the tokens
around it against noise tokens, with the SGNS loss or, with ``loss: nce``, noise-contrastive
estimation (Gutmann & Hyvärinen 2010). Two embedding tables (input and output vectors) with
sparse gradients: a step touches only the rows of its batch.

Two ways to train it: the PyTorch path (batches of pairs, :meth:`SkipGram.sgd_step` or autograd;
any device, SGNS or NCE, any optimiser) and, on the CPU with SGNS and plain SGD, word2vec's own
per-pair updates in a compiled multi-threaded kernel (:meth:`SkipGram.kernel`,
:mod:`contrastkit.methods.skipgram_kernel`, numba). ``kernel: auto`` picks the kernel wherever it
can run.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit.losses.nce import negative_sampling_loss
from contrastkit.methods.base import StepOutput
from contrastkit.methods.registry import MethodOptions, register_method, resolve_options
from contrastkit.options import option

if TYPE_CHECKING:
    from contrastkit.methods.skipgram_kernel import SkipGramKernel

SKIPGRAM_LOSSES: tuple[str, ...] = ("sgns", "nce")
KERNELS: tuple[str, ...] = ("auto", "numba", "torch")


def kernel_available() -> bool:
    """Whether the compiled kernel can be built here (numba is installed)."""
    return importlib.util.find_spec("numba") is not None


@dataclass
class SkipGramOptions(MethodOptions):
    """Skip-gram's options (word2vec's defaults)."""

    embedding_dim: int = option(100, "width of the token vectors", ge=1)
    window: int = option(5, "largest distance between a centre and its contexts", ge=1)
    dynamic_window: bool = option(True, "draw each centre's window from 1..window (word2vec)")
    negatives: int = option(5, "noise tokens per (centre, context) pair", ge=1)
    sample: float = option(1e-3, "subsampling threshold t of frequent tokens (0: off)", ge=0)
    noise_power: float = option(0.75, "noise distribution q ∝ count^power", ge=0)
    shared_negatives: bool = option(
        True, "PyTorch path: draw the K negatives once per centre, for all its pairs (faster; the kernel draws per pair)")
    loss: str = option("sgns", "sgns (negative sampling) or nce (with the log-noise correction)", choices=SKIPGRAM_LOSSES)
    reduction: str = option(
        "sum", "sum over a batch's pairs (word2vec's per-pair SGD steps) or mean (for Adam)", choices=("sum", "mean")
    )
    streams: int = option(
        8, "kernel: read the corpus as this many interleaved streams (consecutive updates from distant "
        "documents; 1: in order)", ge=1)
    kernel: str = option(
        "auto",
        "numba: word2vec's per-pair updates, compiled, multi-threaded (CPU, sgns, plain SGD); torch: batched "
        "PyTorch (GPUs, NCE, any optimiser); auto: numba wherever it can run",
        choices=KERNELS,
    )


def _rows(index: Tensor, values: Tensor) -> Tensor:
    """``index`` (N,) as scatter_add_'s (N, D) index: a row-wise scatter that, unlike index_add_,
    runs in parallel over the columns (deterministic, several times faster on CPU)."""
    return index.unsqueeze(1).expand(-1, values.shape[1])


@register_method(
    "skipgram", options=SkipGramOptions, tasks=("sequences",), paper="Mikolov et al. 2013, arXiv:1310.4546"
)
class SkipGram(nn.Module):
    """Skip-gram: every token's vector predicts its context tokens against noise (word2vec).

    With ``optim.name: sgd`` (no momentum, no weight decay) the sequences task trains with the
    compiled kernel on the CPU (:meth:`kernel`, SGNS) or with the plain-SGD fast path,
    :meth:`sgd_step`; any other optimiser goes through :meth:`loss` and autograd
    (:meth:`training_step`).

    Batch (as :class:`contrastkit.data.sequences.SkipGramLoader` yields it), long tensors of
    token ids on the model's device: ``"centers"`` (C,) the centre tokens, ``"pair_center"``
    (P,) each (centre, context) pair's centre as an index into ``centers``, ``"contexts"`` (P,)
    the context tokens, ``"negatives"`` (C, K) noise tokens shared by a centre's pairs, or
    (P, K) one row per pair. Other keys (``"tokens"``) are ignored.
    """

    def __init__(
        self, vocab_size: int, options: SkipGramOptions | None = None, *, log_noise: Tensor | None = None, **overrides: Any
    ) -> None:
        super().__init__()
        self.opts = resolve_options(SkipGramOptions, options, overrides, "SkipGram")
        dim = self.opts.embedding_dim
        self.input = nn.Embedding(vocab_size, dim, sparse=True)
        self.output = nn.Embedding(vocab_size, dim, sparse=True)
        # gensim's initialisation: inputs uniform in ±1/D (twice word2vec.c's ±0.5/D: WordSim-353 +0.01 on
        # the benchmark's corpus, 4 seeds of 4), zero outputs
        with torch.no_grad():
            self.input.weight.uniform_(-1.0 / dim, 1.0 / dim)
            self.output.weight.zero_()
        self.register_buffer("log_noise", torch.zeros(vocab_size) if log_noise is None else log_noise.float())

    def forward(self, tokens: Tensor) -> Tensor:
        """The input vectors of ``tokens`` (the embeddings people use)."""
        out: Tensor = self.input(tokens)
        return out

    def _logits(self, batch: dict[str, Any], c_all: Tensor, contexts: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
        """Positive logits (P,) of the pairs and negative logits of the negatives' rows (centres,
        or pairs), shifted by −log(k·q) for NCE."""
        owner = batch["pair_center"]
        positive = (c_all.index_select(0, owner) * contexts).sum(1)
        negative = (negatives * c_all.unsqueeze(1)).sum(-1)
        if self.opts.loss == "nce":
            log_q: Tensor = self.log_noise  # type: ignore[assignment]
            shift = math.log(self.opts.negatives)
            positive = positive - (log_q[batch["contexts"]] + shift)
            negative = negative - (log_q[batch["negatives"]] + shift)
        return positive, negative

    def loss(self, batch: dict[str, Any]) -> Tensor:
        """The batch's summed loss: SGNS, or NCE, over its (centre, context) pairs, each with K
        negatives (shared by the pairs of a centre when the batch has one negative row per
        centre). Differentiable: the embedding gradients are sparse."""
        c_all = self.input(batch["centers"])
        positive, negative = self._logits(batch, c_all, self.output(batch["contexts"]), self.output(batch["negatives"]))
        per_pair = negative[batch["pair_center"]] if negative.shape[0] != positive.shape[0] else negative
        return negative_sampling_loss(positive, per_pair, reduction="sum")  # the shift above makes it NCE

    @torch.no_grad()
    def sgd_step(self, batch: dict[str, Any], lr: float) -> Tensor:
        """One plain SGD step on :meth:`loss` with hand-written gradients (no autograd, no sparse
        tensors: gathers with index_select, updates with scatter_add_); the same update as
        ``loss().backward()`` and ``torch.optim.SGD(lr)``, several times faster. Returns the
        loss before the step."""
        w_in, w_out = self.input.weight, self.output.weight
        owner, contexts, negatives = batch["pair_center"], batch["contexts"], batch["negatives"]
        centers, flat_neg = batch["centers"], negatives.reshape(-1)
        c_all = w_in.index_select(0, centers)
        o = w_out.index_select(0, contexts)
        n = w_out.index_select(0, flat_neg).view(negatives.shape[0], negatives.shape[1], w_out.shape[1])
        positive, negative = self._logits(batch, c_all, o, n)
        # d loss / d logit: σ(s) − 1 for the positives, σ(s) for the negatives (times the pairs sharing them)
        g_pos = torch.sigmoid(positive) - 1.0
        g_neg = torch.sigmoid(negative)
        if negative.shape[0] != positive.shape[0]:
            g_neg = g_neg * torch.bincount(owner, minlength=negative.shape[0]).unsqueeze(1).to(g_neg.dtype)
        c_pair = c_all.index_select(0, owner)
        grad_c = (g_neg.unsqueeze(2) * n).sum(1)
        grad_c.scatter_add_(0, _rows(owner, grad_c), g_pos.unsqueeze(1) * o)
        grad_o = (g_pos * -lr).unsqueeze(1) * c_pair
        grad_n = ((g_neg * -lr).unsqueeze(2) * c_all.unsqueeze(1)).reshape(-1, c_all.shape[1])
        w_out.scatter_add_(0, _rows(contexts, grad_o), grad_o)
        w_out.scatter_add_(0, _rows(flat_neg, grad_n), grad_n)
        w_in.scatter_add_(0, _rows(centers, grad_c), grad_c.mul_(-lr))
        per_pair = negative.index_select(0, owner) if negative.shape[0] != positive.shape[0] else negative
        return negative_sampling_loss(positive, per_pair, reduction="sum")

    def training_step(self, batch: dict[str, Any]) -> StepOutput:
        """The loss of a batch through autograd (any optimiser); :class:`SkipGramSGDStep` takes
        the plain-SGD fast path instead."""
        loss = self.loss(batch)
        pairs = max(int(batch["contexts"].numel()), 1)
        logs = {"loss": loss.detach().double() / pairs, "pairs": float(pairs)}
        return StepOutput(loss=loss if self.opts.reduction == "sum" else loss / pairs, logs=logs)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """No momentum encoder or schedule of its own."""

    def kernel(self, keep: np.ndarray, noise: np.ndarray) -> SkipGramKernel:
        """The compiled CPU kernel bound to this model's weights (updated in place through numpy
        views: the weights must stay on the CPU, contiguous), with the corpus' keep probabilities
        of subsampling and its noise distribution (:class:`contrastkit.data.sequences.SkipGramBlocks`)."""
        from contrastkit.methods.skipgram_kernel import SkipGramKernel

        w_in, w_out = self.input.weight.detach(), self.output.weight.detach()
        if w_in.device.type != "cpu" or not (w_in.is_contiguous() and w_out.is_contiguous()):
            raise ValueError("the skip-gram kernel trains contiguous weights on the CPU")
        return SkipGramKernel(w_in.numpy(), w_out.numpy(), keep=keep, noise=noise, window=self.opts.window,
                              negatives=self.opts.negatives, dynamic_window=self.opts.dynamic_window)

    @torch.no_grad()
    def vectors(self) -> Tensor:
        """The input vectors of the whole vocabulary (V, D)."""
        return self.input.weight.detach().clone()
